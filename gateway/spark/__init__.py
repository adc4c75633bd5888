"""Spark integration: a PySpark data source for contracts and copybooks (gateway.spark.source).
pyspark is imported only by these modules (the `spark` extra); the rest of the project runs without it."""
