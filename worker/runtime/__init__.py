"""The job runtime: settings, job store (Redis), blob store, Celery app and task, `serve` supervisor.

The API (service/) and the worker both import it; it imports the pipeline only when a job runs,
and the pipeline never imports it.
"""
