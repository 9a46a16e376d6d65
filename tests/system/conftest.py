"""The fault suite: probes of the real daemon with bad input and faults, run with the rest of the
tests; ``pytest tests/system --soak SECONDS`` also runs the long soak for that many seconds."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", type=float, default=0.0, help="run the soak test for this many seconds")


@pytest.fixture
def soak_s(request: pytest.FixtureRequest) -> float:
    seconds = request.config.getoption("--soak")
    if not seconds:
        pytest.skip("the soak runs only when asked: pytest tests/system --soak 1800")
    return seconds
