"""Soak: the whole stack under load and faults. `tvmq serve --workers 2`, 20 clients (one token and
owner each) submitting 200 tiny jobs in all, and during it a Redis restart and a SIGKILL of a
worker (its pool process with it); then every accepted job must end, and exactly once.

    scripts/soak [--jobs 200] [--clients 20] [--workers 2]

Prints submitted / succeeded / failed (by code) / lost / run twice / re-run, POST p50/p99, the
fault times and the load average. Exit status 1 when a job was lost or ran twice.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "service"))
from svc_helpers import calibration_samples, conv_model_bytes, npz_bytes  # noqa: E402

from worker.runtime.stack import free_port  # noqa: E402

QCONFIG = json.dumps({"calibrate_mode": "max", "bench_runs": 2})
FINISHED = {"succeeded", "failed", "cancelled"}


class Stack:
    """`tvmq serve` in a fresh STORAGE_DIR, with a token per client."""

    def __init__(self, workers: int, tokens: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.storage = Path(tempfile.mkdtemp(prefix="tvmq-soak-"))
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_TOKEN", "STORAGE_DIR")}
        env.update(
            STORAGE_DIR=str(self.storage),
            API_TOKENS=",".join(f"{name}:{token}" for name, token in tokens.items()),
            PYTHONPATH=str(REPO),
        )
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "worker.cli",
                    "serve",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(workers),
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, token: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{self.url}/readyz", headers=_auth(token), timeout=10)
                if ready.status_code == 200 and len(ready.json()["workers"]) >= 1:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"tvmq serve exited: {self.log.read_text()[-3000:]}")
            time.sleep(1)
        raise SystemExit("the stack did not become ready")

    def redis_url(self) -> str:
        found = re.search(r"redis-server at (redis://\S+)", self.log.read_text())
        assert found, "serve printed no redis URL"
        return found.group(1)

    def children(self, word: str) -> list[int]:
        pids = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            for pid in (task / "children").read_text().split():
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                if word.encode() in cmdline:
                    pids.append(int(pid))
        return pids

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Client(threading.Thread):
    """Submits its share of the jobs (retrying 429/503 as a client should), then follows them."""

    def __init__(self, url: str, token: str, jobs: int, files: dict, stats: dict) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.jobs, self.files, self.stats = url, token, jobs, files, stats
        self.ids: list[str] = []
        self.final: dict[str, dict] = {}

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=_auth(self.token), timeout=60) as http:
            for _ in range(self.jobs):
                self._submit(http)
                time.sleep(1.0)
            self._follow(http)

    def _submit(self, http: httpx.Client) -> None:
        for _ in range(60):
            start = time.monotonic()
            try:
                response = http.post("/quantize", files=self.files, data={"qconfig": QCONFIG})
            except httpx.HTTPError:
                self.stats["post_errors"] += 1
                time.sleep(2)
                continue
            self.stats["post_seconds"].append(time.monotonic() - start)
            if response.status_code == 202:
                self.ids.append(response.json()["job_id"])
                self.stats["submitted"] += 1
                return
            self.stats[f"post_{response.status_code}"] += 1
            time.sleep(float(response.headers.get("retry-after", 2)))
        self.stats["not_submitted"] += 1

    def _follow(self, http: httpx.Client) -> None:
        pending = list(self.ids)
        deadline = time.monotonic() + self.stats["deadline"]
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                try:
                    response = http.get(f"/jobs/{job_id}")
                except httpx.HTTPError:
                    continue
                if response.status_code == 404:
                    self.final[job_id] = {"state": "missing"}
                    pending.remove(job_id)
                elif response.status_code == 200 and response.json()["state"] in FINISHED:
                    self.final[job_id] = response.json()
                    pending.remove(job_id)
            time.sleep(2.0)
        for job_id in pending:
            self.final[job_id] = {"state": "unfinished"}


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=3600, help="seconds for every job to end")
    args = parser.parse_args()

    tokens = {f"client-{n}": f"soak-token-{n}" for n in range(args.clients)}
    log = REPO / "build" / "soak-serve.log"
    log.parent.mkdir(exist_ok=True)
    load_before = os.getloadavg()
    began = time.monotonic()
    stack = Stack(args.workers, tokens, log)
    try:
        stack.wait_ready(next(iter(tokens.values())))
        store = redis.Redis.from_url(stack.redis_url(), decode_responses=True)
        files = {
            "model": ("tiny.onnx", conv_model_bytes(), "application/octet-stream"),
            "calibration": (
                "calibration.npz",
                npz_bytes(x=calibration_samples()),
                "application/octet-stream",
            ),
        }
        stats: dict = Counter()
        stats["post_seconds"] = []
        stats["deadline"] = args.deadline
        per_client = [args.jobs // args.clients + (n < args.jobs % args.clients) for n in range(args.clients)]
        clients = [
            Client(stack.url, tokens[f"client-{n}"], per_client[n], files, stats) for n in range(args.clients)
        ]
        for client in clients:
            client.start()
        faults = []

        def when_submitted(count: int) -> None:
            while stats["submitted"] < count:
                time.sleep(0.5)

        when_submitted(args.jobs // 4)
        (redis_pid,) = stack.children("redis-server")
        os.kill(redis_pid, signal.SIGTERM)  # serve restarts it after its back-off, same port and data
        faults.append(
            f"{time.monotonic() - began:6.0f} s  Redis stopped (SIGTERM, pid {redis_pid}); serve restarts it"
        )
        when_submitted(args.jobs // 2)
        worker_pid = stack.children(" worker ")[0]
        os.kill(worker_pid, signal.SIGKILL)  # its pool process dies with it (PR_SET_PDEATHSIG)
        faults.append(
            f"{time.monotonic() - began:6.0f} s  worker SIGKILLed (pid {worker_pid}); serve restarts it"
        )
        for client in clients:
            client.join()

        final = {job_id: job for c in clients for job_id, job in c.final.items()}
        states = Counter(job["state"] for job in final.values())
        codes = Counter(job["error"]["code"] for job in final.values() if job["state"] == "failed")
        records = {job_id: store.hgetall(f"tvmq:job:{job_id}") for job_id in final}
        twice = sum(int(r.get("completed_runs") or 0) > 1 for r in records.values())
        rerun = sum(int(r.get("attempt") or 0) > 1 for r in records.values())
        lost = states["missing"] + states["unfinished"]
        posts = stats["post_seconds"]
        print(f"cpu: {_cpu()}; load average {load_before[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end")
        print(
            f"wall time: {time.monotonic() - began:.0f} s with {args.workers} workers, {args.clients} clients"
        )
        print("faults:\n  " + "\n  ".join(faults))
        missed = stats["not_submitted"]
        print(f"submitted:          {stats['submitted']} (of {args.jobs}; not submitted {missed})")
        print(f"succeeded:          {states['succeeded']}")
        print(f"failed with a code: {states['failed']} {dict(codes)}")
        print(f"cancelled:          {states['cancelled']}")
        print(f"lost:               {lost} (missing {states['missing']}, unfinished {states['unfinished']})")
        print(f"run twice:          {twice} (pipeline completed more than once)")
        print(f"re-run:             {rerun} (a run was interrupted and the job ran again)")
        retried = {k: v for k, v in stats.items() if k.startswith("post_") and k != "post_seconds"}
        print(f"POST retried:       {retried}")
        p50, p99 = (_percentile(posts, q) * 1000 for q in (50, 99))
        print(f"POST latency:       p50 {p50:.0f} ms, p99 {p99:.0f} ms over {len(posts)} POSTs")
        return 1 if lost or twice else 0
    finally:
        stack.stop()


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
