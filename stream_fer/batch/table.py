"""The batch's own files: `batch.csv` (one row per video), `batch.parquet` (every finished video's
per-frame rows with a `video` column, one file that pandas, polars and DuckDB read in one call) and
`batch.log` (the full traceback of every video that failed). All written atomically."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from stream_fer.batch.markers import file_mode, write_atomic

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("video", "status", "this_run", "frames", "faces", "seconds", "fps", "cpu_seconds", "attempts",
                 "error", "worker", "started", "finished", "max_rss_mb", "input")
VIDEO_COLUMN = "video"
DATASET_METADATA_KEY = b"stream_fer_batch"


def write_table(path: Path, rows: Sequence[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TABLE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in TABLE_COLUMNS})
    write_atomic(path, buffer.getvalue())


def append_log(path: Path, video: str, error: str, traceback_text: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"=== {stamp} UTC {video}: {error}\n{traceback_text.rstrip()}\n\n")


def _parts_key(parts: Sequence[tuple[str, Path]]) -> str:
    """Identifies the exact per-video files a dataset was built from (name, size, mtime)."""
    h = hashlib.sha256()
    for video, path in parts:
        st = path.stat()
        h.update(f"{video}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def dataset_is_current(path: Path, parts: Sequence[tuple[str, Path]]) -> bool:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta.get(DATASET_METADATA_KEY, b"{}")).get("parts") == _parts_key(parts)
    except (OSError, ValueError):
        return False
    except Exception:  # noqa: BLE001 - pyarrow's ArrowInvalid for a damaged file: rebuild it
        return False


def _repeated(text: str, count: int):
    """A pyarrow string array of `count` times `text`, built from its buffers: pa.array() and pa.scalar() of
    Python objects import pandas (half a second at the end of every batch, on its critical path)."""
    import numpy as np
    import pyarrow as pa

    data = text.encode()
    offsets = np.arange(count + 1, dtype=np.int64) * len(data)
    if offsets[-1] >= 2**31:  # beyond a string array's 32-bit offsets: the ordinary way
        return pa.array([text] * count, pa.string())
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data * count))


def write_dataset(path: Path, parts: Sequence[tuple[str, Path]]) -> bool:
    """One Parquet file of every part's rows, `video` first. The parts' schemas are unified (a column that
    one file lacks is null there), one row group per video, so memory stays at one video's rows.
    Skipped (False) when the file already holds exactly these parts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if dataset_is_current(path, parts):
        return False
    schemas = [pq.read_schema(p).remove_metadata() for _, p in parts]
    unified = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
    schema = pa.schema([pa.field(VIDEO_COLUMN, pa.string())] + [f for f in unified if f.name != VIDEO_COLUMN])
    meta = {"videos": len(parts), "parts": _parts_key(parts)}
    schema = schema.with_metadata({DATASET_METADATA_KEY: json.dumps(meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for video, part in parts:
                table = pq.ParquetFile(part).read()  # not read_table: it imports pyarrow.dataset (and pandas)
                columns = [_repeated(video, table.num_rows)]
                for field in schema:
                    if field.name == VIDEO_COLUMN:
                        continue
                    if field.name in table.column_names:
                        columns.append(table.column(field.name).cast(field.type))
                    else:
                        columns.append(pa.nulls(table.num_rows, field.type))
                writer.write_table(pa.Table.from_arrays(columns, schema=schema))
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
