"""tvmq worker side: the quantization pipeline, its command line and the Celery app.

Importing this package must stay cheap and TVM-free: the HTTP service imports `worker.qconfig`,
`worker.errors` and `worker.report.schema` and must not pay for (or depend on) TVM.
"""
