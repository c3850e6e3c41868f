"""Client addresses behind reverse proxies: X-Forwarded-For only from TRUSTED_PROXIES."""

from __future__ import annotations

import ipaddress
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from server.config import ConfigError, Settings
from server.http.app import create_app
from server.http.forwarded import client_address
from tests.helpers import MovableClock, base_env
from tests.http.test_logs import served

PROXIES = tuple(ipaddress.ip_network(net) for net in ("10.0.0.0/8", "192.0.2.1", "2001:db8::/32"))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        pytest.param("198.51.100.9", ["203.0.113.7"], "198.51.100.9", id="untrusted-peer"),
        pytest.param("10.1.2.3", [], "10.1.2.3", id="trusted-peer-without-header"),
        pytest.param("10.1.2.3", ["203.0.113.7"], "203.0.113.7", id="one-proxy"),
        pytest.param(
            "10.1.2.3", ["6.6.6.6, 203.0.113.7, 192.0.2.1"], "203.0.113.7", id="proxy-chain"
        ),
        pytest.param(
            "10.1.2.3", ["6.6.6.6", "203.0.113.7, 10.9.9.9"], "203.0.113.7", id="repeated-header"
        ),
        pytest.param("10.1.2.3", ["10.4.4.4, 10.5.5.5"], "10.4.4.4", id="all-trusted"),
        pytest.param("10.1.2.3", ["203.0.113.7, <script>, 10.5.5.5"], "10.5.5.5", id="garbage-hop"),
        pytest.param("::ffff:10.1.2.3", ["203.0.113.7"], "203.0.113.7", id="ipv4-mapped-peer"),
        pytest.param("2001:db8::1", ["[2001:db8:ffff::5]"], "2001:db8:ffff::5", id="ipv6-all"),
        pytest.param("2001:db8::1", ["2a00::7"], "2a00::7", id="ipv6-client"),
    ],
)
def test_the_client_is_the_first_untrusted_hop_from_the_right(
    peer: str, forwarded_for: list[str], client: str
) -> None:
    """Make sure forged hops to the left of the real client are ignored, and proxies skipped."""
    assert client_address(peer, forwarded_for, PROXIES) == client


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    """Make sure anyone's X-Forwarded-For is ignored unless TRUSTED_PROXIES says otherwise."""
    assert client_address("10.1.2.3", ["203.0.113.7"], ()) == "10.1.2.3"


def test_trusted_proxies_are_parsed_and_checked() -> None:
    """Make sure addresses and networks of both families are read, and bad entries refused."""
    settings = Settings.from_env(base_env(TRUSTED_PROXIES=" 10.0.0.0/8, 192.0.2.1 ,::1"))
    assert [str(net) for net in settings.trusted_proxies] == [
        "10.0.0.0/8",
        "192.0.2.1/32",
        "::1/128",
    ]
    assert Settings.from_env(base_env()).trusted_proxies == ()
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES entry 2 is not an IP"):
        Settings.from_env(base_env(TRUSTED_PROXIES="10.0.0.1, proxy.internal"))


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "ghvault.sqlite"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


async def access_client(settings: Settings, clock: MovableClock, log_output: Any) -> str:
    async with served(create_app(settings, clock=clock)) as client:
        await client.get("/healthz", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.7"})
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    (access,) = [line for line in lines if line["logger"] == "aiohttp.access"]
    return access["client"]


async def test_the_access_log_records_the_client_behind_a_trusted_proxy(
    clock: MovableClock, log_output: Any, sqlite_url: str
) -> None:
    """Make sure the access log names the client the trusted proxy (loopback here) reports."""
    settings = Settings.from_env(base_env(DATABASE_URL=sqlite_url, TRUSTED_PROXIES="127.0.0.1"))
    assert await access_client(settings, clock, log_output) == "203.0.113.7"


async def test_the_access_log_records_the_peer_when_no_proxy_is_trusted(
    clock: MovableClock, log_output: Any, sqlite_url: str
) -> None:
    """Make sure a forged X-Forwarded-For from an untrusted peer changes nothing."""
    settings = Settings.from_env(base_env(DATABASE_URL=sqlite_url))
    assert await access_client(settings, clock, log_output) == "127.0.0.1"
