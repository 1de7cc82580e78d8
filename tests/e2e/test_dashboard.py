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


# -- the usage panel (issue 18), driven live over the DevTools protocol ----------------------

ALICE = "sk-alice-dashboard-000001"
BOB = "sk-bob-dashboard-00000002"
LIVE_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,1400", "--remote-debugging-port=0", "--remote-allow-origins=*",
]  # fmt: skip


class Page:
    """One page of a headless Chromium, read with ``Runtime.evaluate`` over DevTools."""

    def __init__(self, ws) -> None:
        self._ws = ws
        self._id = 0

    async def eval(self, expression: str):
        self._id += 1
        await self._ws.send_json(
            {"id": self._id, "method": "Runtime.evaluate",
             "params": {"expression": expression, "returnByValue": True}}
        )  # fmt: skip
        while True:
            reply = await self._ws.receive_json()
            if reply.get("id") == self._id:
                return reply["result"]["result"].get("value")

    async def wait_for(self, expression: str, expected, seconds: float = 30.0):
        """Polls the page (it refreshes itself every 2 s) until ``expression`` is ``expected``."""
        value = None
        async with asyncio.timeout(seconds):
            while (value := await self.eval(expression)) != expected:
                await asyncio.sleep(0.2)
        return value


async def _live_page(tmp_path, url: str):
    import aiohttp

    assert CHROMIUM is not None
    profile = tmp_path / "live-profile"
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, *LIVE_FLAGS, f"--user-data-dir={profile}", url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    port_file = profile / "DevToolsActivePort"
    async with asyncio.timeout(60):
        while not port_file.exists() or not port_file.read_text().strip():
            await asyncio.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    session = aiohttp.ClientSession()
    async with asyncio.timeout(60):
        while True:
            targets = await (await session.get(f"http://127.0.0.1:{port}/json/list")).json()
            pages = [t for t in targets if t.get("type") == "page" and "/dashboard" in t["url"]]
            if pages:
                break
            await asyncio.sleep(0.1)
    ws = await session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
    return proc, session, ws


async def test_the_usage_panel_shows_clients_costs_and_budgets_and_updates_live(
    tmp_path, mock, balancer_factory
):
    clients = (
        f"clients:\n  - {{name: alice, key: {ALICE}, usd_per_day: 1, usd_per_month: 10}}\n"
        f"  - {{name: bob, key: {BOB}}}\n"
    )
    b = await balancer_factory(config_text(mock, ["a"]) + clients)
    headers = {"x-api-key": ALICE, "x-claude-code-session-id": "sess-dashboard-1"}
    await (await b.post(msg("one", model="claude-haiku-4-5"), headers)).read()
    alice_cost = 25 * 1e-6 + 7 * 5e-6  # Haiku 4.5: the mock's 25 tokens in, 7 out
    proc, cdp, ws = await _live_page(tmp_path, b.url + "/dashboard")
    try:
        page = Page(ws)
        await page.wait_for("document.getElementById('login').style.display", "block")
        await page.eval(
            f"document.getElementById('key').value = '{ALICE}';"
            "document.getElementById('save').click(); true"
        )
        row = "document.querySelector('#usage tr[data-client=\"{}\"] {}')?.textContent"
        await page.wait_for(row.format("alice", ".cost-today"), f"${alice_cost:.4f}")
        assert await page.eval(row.format("alice", ".cost-month")) == f"${alice_cost:.4f}"
        left = await page.eval(row.format("alice", ".left"))
        assert left == f"${1 - alice_cost:.4f} today · ${10 - alice_cost:.4f} this month"
        assert await page.eval(row.format("bob", ".cost-today")) == "$0.0000"  # listed, unused
        sessions = "document.querySelector('#sessions tr[data-session=\"sess-dashboard-1\"] .cost')"
        assert await page.eval(sessions + "?.textContent") == f"${alice_cost:.4f}"
        # live: bob's requests appear without a reload
        for i in range(2):
            bobs = await b.post(msg(f"bob {i}", model="claude-opus-4-5"), {"x-api-key": BOB})
            await bobs.read()
        bob_cost = 2 * (25 * 5e-6 + 7 * 25e-6)
        await page.wait_for(row.format("bob", ".cost-today"), f"${bob_cost:.4f}")
        assert await page.eval(row.format("bob", ".left")) == "no budget"
        cells = await page.eval(
            "[...document.querySelectorAll('#usage tr[data-client=\"bob\"] td')]"
            ".map((td) => td.textContent)"
        )
        assert cells[:4] == ["bob", "2", "64", "0.0 %"]
        html = await page.eval("document.documentElement.outerHTML")
        assert ALICE not in html and BOB not in html
    finally:
        await ws.close()
        await cdp.close()
        proc.terminate()
        await proc.wait()
