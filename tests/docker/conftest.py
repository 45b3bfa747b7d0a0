"""Collects what the Docker tests have to say (timings, or why the smoke test could not run) and
prints it at the end of the run, where it is seen even with -q and without -rs."""

from __future__ import annotations

import pytest

_LINES: list[str] = []


@pytest.fixture
def docker_report() -> list[str]:
    """Lines to show in the "docker" section of the terminal summary."""
    return _LINES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _LINES:
        terminalreporter.section("docker")
        for line in _LINES:
            terminalreporter.write_line(line)
