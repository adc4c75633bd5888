"""Example Spark job: a drop folder of mainframe files decoded with a contract on Spark, no
scoring, written as Parquet records and a rejects table, with every file's control verdict
(gateway/spark/job.py says what goes where; score_job.py also scores).

    python deploy/spark/decode_job.py --contract schemas/examples/card_txn.yaml --drop drop/ \
        --out out/ [--master local[2]] [--partition-bytes 67108864]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout: the project beside it

from gateway.spark.job import main

if __name__ == "__main__":
    sys.exit(main(score=False))
