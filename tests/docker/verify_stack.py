"""Checks scripts/compose-smoke makes after the README's client command has run against the stack.

The client (examples/client.py) only shows that a job went through. This verifies what a deployment
promises on top: the API sees every worker replica, the one job is recorded as succeeded (and still
is after Redis restarts, which is what the append-only file is for), and the artifact it downloaded
runs here and agrees with ONNX Runtime on the float model.
Exit status 0 when all hold; otherwise the last line names the first check that failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

from tests.docker.check_artifact import ArtifactMismatch, min_cosine_to_float

READY_TIMEOUT = 60.0  # seconds for workers to (re)connect after Redis comes back


class CheckFailed(Exception):
    """A deployment check failed; the message says which and with what."""


def wait_for_workers(client: httpx.Client, expected: int) -> list[str]:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        response = client.get("/readyz")
        workers = (response.json().get("workers") or []) if response.status_code == 200 else []
        if len(workers) >= expected:
            return workers
        if time.monotonic() > deadline:
            raise CheckFailed(f"/readyz lists {len(workers)} of {expected} workers: {response.text}")
        time.sleep(1.0)


def the_only_job(client: httpx.Client) -> dict:
    page = client.get("/jobs").raise_for_status().json()
    if page["total"] != 1:
        raise CheckFailed(f"expected the one job the client submitted, GET /jobs has {page['total']}")
    job = page["items"][0]
    if job["state"] != "succeeded":
        raise CheckFailed(f"job {job['id']} is {job['state']}: {job.get('error')}")
    return job


def verify(url: str, workers: int, artifact: Path, model: Path, calibration: Path) -> None:
    token = os.environ.get("API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        names = wait_for_workers(client, workers)
        print(f"verify: /readyz: {len(names)} workers {names}")
        job = the_only_job(client)
        print(f"verify: job {job['id']} succeeded")
    worst, samples = min_cosine_to_float(artifact, model, calibration)
    print(f"verify: artifact runs here on {samples} samples; lowest cosine to the float model {worst:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL of the deployed API")
    parser.add_argument("--workers", type=int, required=True, help="worker replicas that must answer")
    parser.add_argument("--artifact", type=Path, required=True, help="the artifact the client downloaded")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--calibration", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        verify(args.url.rstrip("/"), args.workers, args.artifact, args.model, args.calibration)
    except (CheckFailed, ArtifactMismatch, httpx.HTTPError, OSError) as exc:
        print(f"verify: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
