"""The README's quick start on a fresh Debian 12 machine (scripts/fresh-machine): a bookworm
container with only Python, venv, pip, git and CA certificates runs the README's first command as
written on a git archive of HEAD, then the artifact it wrote. Fails when the README's command fails
or does not write what the README says. Runs in CI or with TVMQ_DOCKER=1
(tests/docker/docker_scripts.py).
"""

from __future__ import annotations

import pytest

from tests.docker.docker_scripts import run_docker_script


@pytest.mark.docker
@pytest.mark.slow
def test_readme_quick_start_on_a_fresh_machine(docker_report: list[str]) -> None:
    run_docker_script("fresh-machine", docker_report)
