"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from appliance.config import Config
    from tests.helpers import ServerThread


@pytest.fixture
def serve() -> Iterator[Callable[[Config], ServerThread]]:
    """Start in-process servers with ``serve(config)``; all stopped after the test."""
    from tests.helpers import ServerThread  # the server, only for tests that start one

    started: list[ServerThread] = []

    def start(config: Config) -> ServerThread:
        srv = ServerThread(config)
        srv.wait_ready()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
