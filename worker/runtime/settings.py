"""Service and worker configuration, read from environment variables (names are the field names in
upper case, e.g. REDIS_URL). One Settings object is shared by the API, the Celery app and
`tvmq serve`, so the time limits the worker enforces and the ones the API reasons about agree."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="broker, result backend and job store")
    storage_dir: Path = Field(Path("var/tvmq"), description="blob store shared by the API and the workers")
    api_token: str | None = Field(None, description="if set, every endpoint but health checks needs it")
    api_tokens: str | None = Field(
        None, description="'name:token,name:token': one token per job owner (each sees only its own jobs)"
    )
    api_tokens_file: Path | None = Field(
        None, description="a file of 'name token' lines, read like API_TOKENS ('#' starts a comment)"
    )
    rate_limit: int = Field(
        600, ge=0, description="requests per RATE_LIMIT_WINDOW from one client (token, else address); 0: off"
    )
    rate_limit_window: int = Field(60, gt=0, description="seconds of the rate-limit window")
    celery_queue: str = Field("tvmq", description="queue the API sends jobs to and the workers consume")
    redis_prefix: str = Field("tvmq", description="prefix of the job-record keys, to share one Redis")

    max_model_bytes: int = Field(256 * MIB, gt=0, description="413 past this ONNX upload size")
    max_calibration_bytes: int = Field(512 * MIB, gt=0, description="413 past this .npz upload size")
    max_calibration_unpacked_bytes: int = Field(
        2048 * MIB, gt=0, description="422 when the .npz arrays would take more than this once unpacked"
    )
    max_qconfig_bytes: int = Field(64 * 1024, gt=0, description="413 past this qconfig text size")

    job_soft_time_limit: int = Field(1800, gt=0, description="seconds; the job fails with E_TIMEOUT")
    job_time_limit: int = Field(
        1860, gt=0, description="seconds; the worker process is killed and the job fails with E_TIMEOUT"
    )
    max_deliveries: int = Field(
        3, ge=1, description="runs of one job whose worker is lost before it fails with E_WORKER_LOST"
    )
    job_memory_limit: int = Field(
        8192 * MIB,
        ge=0,
        description="bytes of heap and anonymous memory of the process running a job (RLIMIT_DATA); past "
        "it the job fails with E_OUT_OF_MEMORY; 0: no limit",
    )
    job_heartbeat: float = Field(5.0, gt=0, description="seconds between a running job's heartbeats")
    job_lease: float = Field(
        60.0, gt=0, description="seconds without a heartbeat before a job is re-queued as lost"
    )
    visibility_timeout: int = Field(
        2400, gt=0, description="seconds before Redis re-delivers an unacknowledged job; > job_time_limit"
    )
    job_retention: int = Field(7 * 86400, gt=0, description="seconds finished jobs and their files are kept")
    sweep_interval: int = Field(600, gt=0, description="seconds between retention sweeps in the API process")

    @model_validator(mode="after")
    def _limits_agree(self) -> Settings:
        if self.job_soft_time_limit >= self.job_time_limit:
            raise ValueError("JOB_SOFT_TIME_LIMIT must be smaller than JOB_TIME_LIMIT")
        # Otherwise Redis hands a still-running job to a second worker and it runs twice.
        if self.visibility_timeout <= self.job_time_limit:
            raise ValueError("VISIBILITY_TIMEOUT must be longer than JOB_TIME_LIMIT")
        # A lease shorter than a few heartbeats re-queues jobs whose worker is merely slow.
        if self.job_lease < 3 * self.job_heartbeat:
            raise ValueError("JOB_LEASE must be at least 3 x JOB_HEARTBEAT")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings from the environment; tests build their own Settings instead."""
    return Settings()
