"""The Docker deployment end to end (scripts/compose-smoke): image build, compose up with three
workers, a job through the API, the artifact run here, Redis AOF recovery, teardown. About 6 minutes
with nothing cached on 2 cores; runs in CI or with TVMQ_DOCKER=1 (tests/docker/docker_scripts.py).
"""

from __future__ import annotations

import pytest

from tests.docker.docker_scripts import run_docker_script


@pytest.mark.docker
@pytest.mark.slow
def test_compose_smoke(docker_report: list[str]) -> None:
    run_docker_script("compose-smoke", docker_report)
