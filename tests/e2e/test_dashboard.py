"""The dashboard in a real headless Chromium: the page's script renders live data."""

from __future__ import annotations

import asyncio
import re
import shutil

import pytest

from ccbalancer.mock import Script
from tests.conftest import config_text, msg

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/test installs it with apt)"
)

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=4000", "--window-size=1280,900",
]  # fmt: skip


async def _chromium(tmp_path, *args: str) -> str:
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(90):
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode()


async def test_dashboard_renders_providers_states_and_recent_requests(
    tmp_path, mock, balancer_factory
):
    settings = "unhealthy_threshold: 1\nfailure_cooldown: 120\nsticky_provider_duration: 0\n"
    b = await balancer_factory(config_text(mock, ["relay-a", "relay-b"], settings=settings))
    mock.enqueue("relay-a", Script(status=529))
    for i in range(3):
        await (await b.post(msg(f"dash {i}"))).read()
    dom = await _chromium(tmp_path, "--dump-dom", b.url + "/dashboard")
    rows = dict(re.findall(r'<tr data-provider="([^"]+)">.*?class="state (\w+)"', dom, re.S))
    assert rows == {"relay-a": "cooling_down", "relay-b": "healthy"}
    assert len(re.findall(r'<tr class="request">\s*<td class="dim">\d', dom)) == 3
    assert re.search(r'id="k-auth"[^>]*>0</b>', dom)  # refused keys in the last 5 minutes
    assert "sk-prov-" not in dom
    shot = tmp_path / "dashboard.png"
    await _chromium(tmp_path, f"--screenshot={shot}", b.url + "/dashboard")
    assert shot.stat().st_size > 10_000


async def test_dashboard_data_needs_the_key_when_auth_is_on(tmp_path, mock, balancer_factory):
    settings = "auth: {enabled: true, api_key: sk-dash-key-1}\n"
    b = await balancer_factory(config_text(mock, ["a"], settings=settings))
    assert (await b.session.get(b.url + "/dashboard")).status == 200
    assert (await b.session.get(b.url + "/dashboard/data")).status == 401
    ok = await b.session.get(b.url + "/dashboard/data", headers={"x-api-key": "sk-dash-key-1"})
    assert ok.status == 200
    dom = await _chromium(tmp_path, "--dump-dom", b.url + "/dashboard")
    assert 'id="login" style="display: block;"' in dom  # the page asks for the key
    # and stops polling meanwhile: only its first, keyless fetch counts as a refused key
    assert b.runtime.refusals.total == 2  # that fetch and this test's own keyless request
