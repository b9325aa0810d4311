"""The per-frame results as data: one typed schema for the row of stream_fer.records, a Parquet sink, a
collector that keeps a run's rows compactly, and `read_results` for what any sink wrote.

One schema, three files: CSV, JSON Lines and Parquet hold the same rows (records.to_row) and read back,
through `read_results`, into the same DataFrame:

    frame_index, num_faces           int64
    timestamp                        float64 (seconds of media time)
    track_id                         Int64 (pandas' nullable integer: <NA> on the row of a frame without faces)
    box_*                            float32
    label, raw_label, trust_reason   string (pandas' nullable string: <NA> without a face; trust_reason also
                                     <NA> when nothing lowered the trust)
    every other column               float32 (confidence, p_*, raw_*, att_au_cosine, trust, share_AU*, bs_*);
                                     NaN where the row has no value (no face, no AU map for neutral, a
                                     blendshape that does not measure the label's AUs)

Columns a newer stream-fer adds to records.ROW_FIELDS are float32 unless listed in COLUMN_TYPES; columns a
file has beyond the schema are kept with the types their reader infers.

Parquet files carry file-level metadata (stream-fer version, model hashes, settings, source, fps) as JSON
under the key "stream_fer"; `read_results` puts it in `df.attrs["stream_fer"]`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stream_fer.errors import StreamFerError, first_line
from stream_fer.frames import Frame, FrameResult
from stream_fer.records import ROW_FIELDS

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

METADATA_KEY = "stream_fer"
RESULT_SUFFIXES = (".parquet", ".csv", ".jsonl")

# Arrow type (the name of its pyarrow factory) per column that is not float32. Names, not pyarrow objects:
# pyarrow (70 ms of start-up) is imported only where a table is built or read, not for a CSV run.
COLUMN_TYPES: dict[str, str] = {
    "frame_index": "int64",
    "timestamp": "float64",
    "num_faces": "int64",
    "track_id": "int64",
    "label": "string",
    "raw_label": "string",
    "trust_reason": "string",
}
# pandas dtype per Arrow type (ints with nulls stay integers: pandas' nullable Int64)
_PANDAS_DTYPES = {"int64": "int64", "float64": "float64", "float32": "float32", "string": "string"}
_NULLABLE_INTS = ("track_id",)


def _type_name(column: str) -> str:
    return COLUMN_TYPES.get(column, "float32")


def arrow_type(column: str) -> pa.DataType:
    import pyarrow as pa

    return getattr(pa, _type_name(column))()


def arrow_schema(columns: Sequence[str] = ROW_FIELDS, metadata: dict | None = None) -> pa.Schema:
    import pyarrow as pa

    fields = [pa.field(c, arrow_type(c), nullable=c not in ("frame_index", "timestamp", "num_faces"))
              for c in columns]
    return pa.schema(fields, metadata=_encode_metadata(metadata) if metadata else None)


def pandas_dtypes(columns: Sequence[str] = ROW_FIELDS) -> dict[str, str]:
    """The documented dtype of each column of a results DataFrame."""
    return {c: ("Int64" if c in _NULLABLE_INTS else _PANDAS_DTYPES[_type_name(c)]) for c in columns}


def _encode_metadata(metadata: dict) -> dict[bytes, bytes]:
    return {METADATA_KEY.encode(): json.dumps(metadata, default=str, sort_keys=True).encode()}


def rows_to_table(rows: Sequence[dict], columns: Sequence[str] = ROW_FIELDS) -> pa.Table:
    """Rows (dicts with the keys `columns`; None = null) as a typed Arrow table."""
    import pyarrow as pa

    arrays = [pa.array([row.get(c) for row in rows], type=arrow_type(c)) for c in columns]
    return pa.Table.from_arrays(arrays, schema=arrow_schema(columns))


def table_to_pandas(table: pa.Table) -> pd.DataFrame:
    """An Arrow table of rows as the typed results DataFrame (see the module docstring)."""
    df = table.to_pandas()
    known = [c for c in df.columns if c in ROW_FIELDS or c in COLUMN_TYPES]
    df = df.astype(pandas_dtypes(known))
    for c in df.columns:
        if c not in known and df[c].dtype == object:  # an extra column of text
            df[c] = df[c].astype("string")
    return df


class RowCollector:
    """Keeps a run's rows compactly (typed Arrow batches of `chunk` rows), for Results.to_pandas()."""

    def __init__(self, columns: Sequence[str] = ROW_FIELDS, chunk: int = 2048) -> None:
        self.columns = tuple(columns)
        self._chunk = chunk
        self._pending: list[dict] = []
        self._batches: list[pa.Table] = []
        self.rows = 0

    def add(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self._pending.append(row)
            self.rows += 1
        if len(self._pending) >= self._chunk:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._batches.append(rows_to_table(self._pending, self.columns))
            self._pending = []

    def table(self) -> pa.Table:
        import pyarrow as pa

        self._flush()
        if not self._batches:
            return rows_to_table([], self.columns)
        return pa.concat_tables(self._batches)


class RowsMemo:
    """rows_of(result) for every row sink of one run: the rows of the last result are computed once and
    shared (the sinks are called one after the other for the same result)."""

    def __init__(self, rows_of: Callable[[FrameResult], list[dict]]) -> None:
        self._rows_of = rows_of
        self._last: FrameResult | None = None
        self._rows: list[dict] = []

    def __call__(self, result: FrameResult) -> list[dict]:
        if result is not self._last:
            self._rows = self._rows_of(result)
            self._last = result
        return self._rows


class ParquetSink:
    """The rows as a Parquet file with typed columns and the run's metadata.

    Written under a temporary name beside the target (".NAME.part") and renamed into place when closed, so
    the target name only ever holds a complete, readable file; close() runs after an error or Ctrl-C too
    (the pipeline closes its sinks in a `finally`), so the file then holds every row up to there.
    `metadata` may be set until the first rows are flushed (the model hash is known only after the model
    loads, which is after the outputs are opened)."""

    wants_annotated = False  # rows only: the pipeline need not render for this sink

    def __init__(self, path: str | Path, rows_of: Callable[[FrameResult], list[dict]] | None = None,
                 columns: Sequence[str] = ROW_FIELDS, metadata: dict | None = None, row_group: int = 8192) -> None:
        from stream_fer.sinks import check_writable

        self.path = check_writable(path)
        self.part_path = self.path.with_name(f".{self.path.name}.part")
        self.columns = tuple(columns)
        self.metadata = dict(metadata or {})
        self._rows_of = rows_of or _default_rows
        self._row_group = row_group
        self._pending: list[dict] = []
        self._writer = None
        self._closed = False
        self.rows = 0
        try:  # prove now that the temporary file can be created
            with open(self.part_path, "wb"):
                pass
        except OSError as exc:
            raise StreamFerError(f"cannot write {self.part_path}: {exc.strerror or exc}") from None

    def write(self, frame: Frame, result: FrameResult, annotated: np.ndarray | None = None) -> None:
        rows = self._rows_of(result)
        self._pending.extend(rows)
        self.rows += len(rows)
        if len(self._pending) >= self._row_group:
            self._flush()

    def _flush(self) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            self._writer = pq.ParquetWriter(self.part_path, arrow_schema(self.columns, self._file_metadata()),
                                            compression="zstd")
        if self._pending:
            self._writer.write_table(rows_to_table(self._pending, self.columns))
            self._pending = []

    def _file_metadata(self) -> dict:
        return {**self.metadata, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def close(self) -> None:
        """Write what is buffered, finish the file and rename it into place. Safe to call twice."""
        import pyarrow as pa

        if self._closed:
            return
        self._closed = True
        try:
            self._flush()
            self._writer.close()
            os.replace(self.part_path, self.path)
        except (OSError, pa.ArrowException) as exc:
            raise StreamFerError(f"writing {self.path} failed: {first_line(exc)}") from None
        finally:
            if self.part_path.exists():
                try:
                    self.part_path.unlink()
                except OSError:
                    pass


def _default_rows(result: FrameResult) -> list[dict]:
    from stream_fer.records import to_row

    return to_row(result)


# ------------------------------------------------------------------------------------------ reading


def read_results(path: str | Path) -> pd.DataFrame:
    """What `stream-fer run` (or stream_fer.analyze) wrote, as the typed results DataFrame: a .parquet,
    .csv or .jsonl file. A Parquet file's metadata is in `df.attrs["stream_fer"]`. Bad input raises one
    StreamFerError."""
    p = Path(path)
    if not p.exists():
        raise StreamFerError(f"results file not found: {p}")
    if p.is_dir():
        raise StreamFerError(f"{p} is a directory, not a results file")
    suffix = p.suffix.lower()
    import pyarrow as pa

    try:
        if suffix == ".parquet":
            table, metadata = _read_parquet(p)
        elif suffix == ".csv":
            table, metadata = _read_csv(p), {}
        elif suffix in (".jsonl", ".ndjson"):
            table, metadata = _read_jsonl(p), {}
        else:
            raise StreamFerError(f"cannot read results from {p}: expected one of {', '.join(RESULT_SUFFIXES)}")
    except pa.ArrowException as exc:
        raise StreamFerError(f"{p} is not a readable stream-fer results file ({first_line(exc)})") from None
    if "frame_index" not in table.column_names:
        raise StreamFerError(f"{p} is not a stream-fer results file (no frame_index column)")
    df = table_to_pandas(table)
    df.attrs[METADATA_KEY] = metadata
    return df


def file_metadata(path: str | Path) -> dict:
    """The stream-fer metadata of a Parquet results file ({} for CSV / JSON Lines, which have none)."""
    p = Path(path)
    if p.suffix.lower() != ".parquet":
        return {}
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return _decode_metadata(pq.read_schema(p).metadata)
    except (OSError, pa.ArrowException) as exc:
        raise StreamFerError(f"{p} is not a readable Parquet file ({first_line(exc)})") from None


def _decode_metadata(raw: dict | None) -> dict:
    value = (raw or {}).get(METADATA_KEY.encode())
    if not value:
        return {}
    try:
        return json.loads(value)
    except ValueError:
        return {}


def _read_parquet(p: Path) -> tuple[pa.Table, dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(p)
    return _cast_known(table), _decode_metadata(table.schema.metadata)


def _read_csv(p: Path) -> pa.Table:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    # floats are parsed as float64 and then cast, exactly as the writer turned Python floats into float32
    types = {c: (pa.float64() if arrow_type(c) == pa.float32() else arrow_type(c)) for c in ROW_FIELDS}
    options = pcsv.ConvertOptions(column_types=types, strings_can_be_null=True, null_values=[""],
                                  quoted_strings_can_be_null=True)
    return _cast_known(pcsv.read_csv(p, convert_options=options))


def _read_jsonl(p: Path) -> pa.Table:
    # pyarrow's JSON reader would need every column present in the first block; json.loads per line is
    # exact (Python floats, as the writer had them) and fast enough for results files
    import pyarrow as pa

    rows = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise StreamFerError(f"{p}: line {n} is not JSON ({first_line(exc)})") from None
    columns = list(dict.fromkeys(c for row in rows for c in row)) if rows else list(ROW_FIELDS)
    known = [c for c in columns if c in ROW_FIELDS or c in COLUMN_TYPES]
    table = rows_to_table(rows, known)
    for c in columns:
        if c not in known:
            table = table.append_column(c, pa.array([row.get(c) for row in rows]))
    return table


def _cast_known(table: pa.Table) -> pa.Table:
    """The columns of the schema cast to their types; other columns as read."""
    import pyarrow as pa

    fields = []
    for f in table.schema:
        known = f.name in ROW_FIELDS or f.name in COLUMN_TYPES
        fields.append(pa.field(f.name, arrow_type(f.name) if known else f.type))
    target = pa.schema(fields, metadata=table.schema.metadata)
    try:
        return table.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise StreamFerError(f"results columns of unexpected types ({first_line(exc)})") from None

