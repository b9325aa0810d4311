"""Many videos in one job: `stream-fer batch`. Each video goes through `stream_fer.analyze` in a local
process pool (default) or as a Ray task; outputs are renamed into place and a done-marker written last, so
a batch can be stopped and resumed at any point and no video is done twice.

    inputs.py      INPUT arguments -> the sorted list of videos, their names, --shard
    layout.py      where each video's outputs go
    markers.py     atomic writes, fingerprints, done/failed markers
    job.py         the per-video job (what a worker runs)
    pool.py        the local process pool runner
    ray_runner.py  the Ray runner (optional extra)
    table.py       batch.csv, batch.parquet, batch.log
    runner.py      plan, run, record
"""

from stream_fer.batch.inputs import Shard, VideoInput, discover
from stream_fer.batch.job import BatchSettings
from stream_fer.batch.runner import BatchOptions, BatchReport, run_batch

__all__ = ["BatchOptions", "BatchReport", "BatchSettings", "Shard", "VideoInput", "discover", "run_batch"]
