"""tvmq HTTP service: FastAPI in front of Redis job records, a blob store and Celery. No TVM import."""
