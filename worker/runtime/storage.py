"""The blob store: one directory per job under STORAGE_DIR, shared by the API and the workers.

Paths are built only from a validated job id and fixed file names; nothing a user sends (file names
included) ever becomes part of a path.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")

MODEL_FILE = "model.onnx"
CALIBRATION_FILE = "calibration.npz"
VALIDATION_FILE = "validation.npz"
ARTIFACT_FILE = "model.so"
REPORT_FILE = "report.json"


def is_job_id(value: str) -> bool:
    return bool(JOB_ID_RE.match(value))


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"

    def job_dir(self, job_id: str) -> Path:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.jobs_dir / job_id

    def input_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "input"

    def output_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "output"

    def model_path(self, job_id: str) -> Path:
        return self.input_dir(job_id) / MODEL_FILE

    def calibration_path(self, job_id: str) -> Path:
        return self.input_dir(job_id) / CALIBRATION_FILE

    def validation_path(self, job_id: str) -> Path:
        return self.input_dir(job_id) / VALIDATION_FILE

    def artifact_path(self, job_id: str) -> Path:
        return self.output_dir(job_id) / ARTIFACT_FILE

    def report_path(self, job_id: str) -> Path:
        return self.output_dir(job_id) / REPORT_FILE

    def prepare_inputs(self, job_id: str) -> Path:
        path = self.input_dir(job_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def fresh_output_dir(self, job_id: str) -> Path:
        """An empty output directory: a re-delivered job must not mix its files with a dead run's."""
        path = self.output_dir(job_id)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def job_ids_older_than(self, age_seconds: float) -> Iterator[str]:
        """Job directories untouched for `age_seconds` (orphans of interrupted uploads included)."""
        if not self.jobs_dir.is_dir():
            return
        cutoff = time.time() - age_seconds
        for entry in self.jobs_dir.iterdir():
            if is_job_id(entry.name) and entry.stat().st_mtime < cutoff:
                yield entry.name
