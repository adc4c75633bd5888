"""Batch mode: files from a drop folder through a pipeline, safe to stop, kill and restart.

A run is one input file. It is claimed in the state store (by content hash: a file whose
content was processed before is not processed again unless an operator replays it),
moved into the work folder, and read in chunks. Per chunk:

    decode + validate (the source) -> score (the pipeline) -> render -> append the records
    and the rejects to their temporary files -> flush + fsync both -> ack the batch,
    which stores the checkpoint: input position, output lengths, counts, control sums.

Killed at any moment and restarted, a run takes itself over (its owner is gone), cuts
its temporary files back to the checkpointed lengths, seeks the input to the checkpointed
position and goes on; the result is byte for byte that of an uninterrupted run. A record
that crashes a chunk is isolated by splitting the chunk until it is found, and rejected
with the reason. At the end the control totals are checked, the outputs are renamed into
place, the manifest is written and the input moves to done/ (or, when the trailer's
control totals do not match, nothing is published: the rejects and a report go to
failed/ with the input). That last phase is checkpointed too and idempotent.
"""

from gateway.batch.driver import BatchDriver
from gateway.batch.job import BUSY, INTERRUPTED, BatchJob, JobResult
from gateway.batch.progress import LogProgress, NoProgress, ProgressView, TerminalProgress
from gateway.batch.runtime import BatchRuntime, build_runtime

__all__ = [
    "BUSY", "INTERRUPTED", "BatchDriver", "BatchJob", "BatchRuntime", "JobResult", "LogProgress", "NoProgress",
    "ProgressView", "TerminalProgress", "build_runtime",
]
