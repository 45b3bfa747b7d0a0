"""tvmq worker side: the quantization pipeline, its command line and the job runtime (runtime/).

Importing this package must stay cheap and TVM-free: the HTTP service imports `worker.qconfig`,
`worker.errors`, `worker.report.schema` and `worker.runtime` and must not pay for (or depend on) TVM.
"""
