"""Shared fixtures: real DAV servers, one per test session and kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_env import Env, make_env
from tests.conftest_google import google, google_tls, google_token  # noqa: F401
from tests.servers import DavServer, start_radicale, start_xandikos


@pytest.fixture(scope="session")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    srv = start_radicale(tmp_path_factory.mktemp("radicale"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def xandikos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    srv = start_xandikos(tmp_path_factory.mktemp("xandikos"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session", params=["radicale", "xandikos"])
def dav_server(request: pytest.FixtureRequest) -> DavServer:
    """Parametrises a test over both real servers (the contract suites)."""
    srv: DavServer = request.getfixturevalue(request.param)
    return srv


@pytest.fixture
def env(tmp_path: Path, dav_server: DavServer) -> Env:
    """The CLI on a fresh config and calendar, against each real server."""
    return make_env(tmp_path, dav_server)


@pytest.fixture
def tmp_state(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d
from tests.conftest_microsoft import ms, ms_ca  # noqa: E402,F401  (Microsoft emulators)
