"""Example Spark job: a drop folder of mainframe files decoded and scored with a contract's
pipeline on Spark, written as Parquet records and a rejects table, with every file's control
verdict (gateway/spark/job.py says what goes where).

    python deploy/spark/score_job.py --contract schemas/examples/card_txn.yaml --drop drop/ \
        --out out/ [--config gateway.yaml] [--master local[2]] [--rejects-table lgw_rejects]
    spark-submit deploy/spark/score_job.py ...   (gateway, schemas, adapters on the executors' path)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout: the project beside it

from gateway.spark.job import main

if __name__ == "__main__":
    sys.exit(main(score=True))
