"""The dashboard in a real headless Chromium: the page's script renders live data."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import shutil
from collections.abc import AsyncIterator
from itertools import pairwise

import orjson
import pytest

from ccbalancer.mock import Script
from tests.conftest import config_text, msg, read_until

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
    assert len(re.findall(r'<tr class="request" [^>]*>\s*<td class="dim">\d', dom)) == 3
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


# -- issue 19 item 11: streams in flight, request detail, counts, axes, sessions, room --------


@contextlib.asynccontextmanager
async def live(tmp_path, url: str, key: str | None = None) -> AsyncIterator[Page]:
    """A live page of the dashboard at ``url`` (its key entered when given), closed after."""
    proc, cdp, ws = await _live_page(tmp_path, url + "/dashboard")
    try:
        page = Page(ws)
        if key is not None:
            await page.wait_for("document.getElementById('login').style.display", "block")
            await page.eval(
                f"document.getElementById('key').value = '{key}';"
                "document.getElementById('save').click(); true"
            )
        yield page
    finally:
        await ws.close()
        await cdp.close()
        proc.terminate()
        await proc.wait()


def _cell(table: str, row: str, cell: str) -> str:
    """The text of ``cell`` (a selector) in the row of ``table`` whose attribute is ``row``."""
    return f"document.querySelector('#{table} tr[{row}] {cell}')?.textContent"


CLIENTS = f"clients:\n  - {{name: alice, key: {ALICE}}}\n"


async def test_active_streams_list_a_running_stream_until_its_client_leaves_as_cancelled(
    tmp_path, mock, balancer_factory
):
    b = await balancer_factory(config_text(mock, ["a"]) + CLIENTS)
    mock.enqueue("a", Script(stall_after=5))  # message_start, ping, block start, two deltas
    resp = await b.post(msg("stalls", model="claude-haiku-4-5"), {"x-api-key": ALICE})
    request_id = resp.headers["x-ccbalancer-request-id"]
    await read_until(resp, 5)
    row = f'data-request="{request_id}"'
    async with live(tmp_path, b.url, ALICE) as page:
        await page.wait_for(_cell("streams", row, ".events"), "5")
        assert await page.eval(_cell("streams", row, ".client")) == "alice"
        assert await page.eval(_cell("streams", row, ".model")) == "claude-haiku-4-5"
        assert await page.eval(_cell("streams", row, ".provider")) == "a"
        assert re.fullmatch(r"[\d.]+ ms", await page.eval(_cell("streams", row, ".ttft")))
        assert re.fullmatch(r"[\d.]+ s", await page.eval(_cell("streams", row, ".age")))
        assert await page.eval("document.getElementById('k-streams').textContent") == "1"
        resp.close()  # the client leaves mid-stream
        gone = f"document.querySelector('#streams tr[{row}]') === null"
        await page.wait_for(gone, True)
        await page.wait_for(_cell("recent", row, ".status"), "cancelled")
        verdict = f"document.querySelector('#recent tr[{row}]').dataset.verdict"
        assert await page.eval(verdict) == "cancelled"
        assert await page.eval("document.getElementById('k-cancelled').textContent") == "1"
        assert await page.eval("document.getElementById('k-errors').textContent") == "0"
        assert await page.eval("document.getElementById('k-streams').textContent") == "0"


ATTEMPTS = (
    "[...document.querySelectorAll('#detail-attempts tbody tr')].map((tr) => "
    "[tr.dataset.provider, tr.dataset.outcome, tr.querySelector('.status').textContent, "
    "tr.querySelector('.mode').textContent, tr.querySelector('.hedged').textContent])"
)


def _fact(field: str) -> str:
    return f"document.querySelector('#detail dd[data-field=\"{field}\"]')?.textContent"


async def _open(page: Page, request_id: str) -> None:
    """Clicks the request's row in the recent list (once it is listed): its detail opens."""
    row = f"document.querySelector('#recent tr[data-request=\"{request_id}\"] td')"
    await page.wait_for(f"!!{row}", True)
    await page.eval(f"{row}.click(); true")
    await page.wait_for(
        "document.getElementById('detail-title').textContent", f"request {request_id}"
    )
    assert await page.eval("document.getElementById('detail').open") is True


async def test_a_click_on_a_recent_request_shows_every_attempt_of_a_failover_recovery_and_hedge(
    tmp_path, mock, balancer_factory
):
    no_sticky = "sticky_provider_duration: 0\n"  # both requests go to a first
    b = await balancer_factory(config_text(mock, ["a", "b"], settings=no_sticky) + CLIENTS)
    key = {"x-api-key": ALICE}
    mock.enqueue("a", Script(status=529))
    failover = await b.post(msg("fails over"), key)
    await failover.read()
    pieces = orjson.dumps(["Hello", " from", " the", " mock.", " Second", " line."]).decode()
    cut = {"pieces": pieces, "providers": {"a": {"cut_after": 5}}}
    recovered = await b.post(
        msg(f"go <<mock {orjson.dumps(cut).decode()}>>", model="claude-opus-4-5"), key
    )
    await recovered.read()
    failover_id = failover.headers["x-ccbalancer-request-id"]
    recovered_id = recovered.headers["x-ccbalancer-request-id"]
    # a second balancer, its first candidate slow: the hedge wins the race
    mock.enqueue("c", Script(first_event_delay=5))
    hedging = await balancer_factory(config_text(mock, ["c", "d"], settings="hedge_after: 0.3\n"))
    hedged = await hedging.post(msg("raced"))
    await hedged.read()
    assert hedged.headers["x-provider-used"] == "d"
    async with live(tmp_path, b.url, ALICE) as page:  # auth on: the detail needs the key too
        await _open(page, failover_id)
        assert await page.eval(ATTEMPTS) == [
            ["a", "failover", "529", "–", ""],
            ["b", "ok", "–", "–", ""],
        ]
        assert await page.eval(_fact("provider")) == "b"
        assert re.fullmatch(
            r"\d+ gaps: median [\d.]+ ms, longest [\d.]+ ms", await page.eval(_fact("gaps"))
        )
        assert await page.eval(_fact("input")) == "25"
        assert re.fullmatch(r"\$\d\.\d{4}", await page.eval(_fact("cost")))
        await page.eval("document.getElementById('detail-close').click(); true")
        assert await page.eval("document.getElementById('detail').open") is False

        row = f'data-request="{recovered_id}"'
        status = await page.eval(_cell("recent", row, ".status"))
        assert status == "200 recovered by b"  # visibly marked in the list
        await _open(page, recovered_id)
        attempts = await page.eval(ATTEMPTS)
        assert [a[:2] for a in attempts] == [["a", "mid_stream"], ["b", "continued"]]
        assert attempts[1][3] == "prefill"
        continued = "document.querySelectorAll('#detail-attempts tbody tr')[1]"
        assert re.fullmatch(
            r"[\d.]+ ms", await page.eval(continued + ".querySelector('.gap').textContent")
        )
        assert (await page.eval(continued + ".querySelector('.at').textContent")).startswith(
            "block 0 (text)"
        )
        assert "finished the answer" in await page.eval(
            continued + ".querySelector('.outcome').textContent"
        )
        assert await page.eval(_fact("finished_by")) == "b"
        html = await page.eval("document.documentElement.outerHTML")
        assert ALICE not in html and "sk-prov-" not in html

        await page.eval(f"location.href = '{hedging.url}/dashboard'; true")
        hedged_id = hedged.headers["x-ccbalancer-request-id"]
        await page.wait_for(
            f"!!document.querySelector('#recent tr[data-request=\"{hedged_id}\"]')", True
        )
        tried = await page.eval(_cell("recent", f'data-request="{hedged_id}"', ".tried"))
        assert tried == "c:cancelled(lost the race to d), d:ok hedged"
        await _open(page, hedged_id)
        assert await page.eval(ATTEMPTS) == [
            ["c", "cancelled", "–", "–", ""],
            ["d", "ok", "–", "–", "hedged"],
        ]
        loser = "document.querySelector('#detail-attempts tbody tr .why').textContent"
        assert await page.eval(loser) == "lost the race to d"


async def test_the_header_counts_errors_exactly_as_the_table_marks_them(
    tmp_path, mock, balancer_factory
):
    b = await balancer_factory(config_text(mock, ["a"], settings="unhealthy_threshold: 10\n"))
    post = functools.partial(b.session.post, b.url + "/v1/messages", headers={"x-api-key": "k"})
    assert (await post(data=b"{not json")).status == 400  # refused at the door
    assert (await post(json={"model": "claude-sonnet-4-5"})).status == 400  # no messages
    mock.enqueue("a", Script(status=400, error_type="invalid_request_error"))
    assert (await b.post(msg("the provider refuses it"))).status == 400
    mock.enqueue("a", Script(status=500))
    assert (await b.post(msg("no answer"))).status >= 500
    mock.enqueue("a", Script(error_after=4))
    await (await b.post(msg("breaks off mid-stream"))).read()
    await (await b.post(msg("fine"))).read()
    async with live(tmp_path, b.url) as page:
        await page.wait_for("document.getElementById('k-requests').textContent", "6")
        rows = "document.querySelectorAll('#recent tr[data-verdict=\"{}\"]').length"
        errors = await page.eval("document.getElementById('k-errors').textContent")
        assert errors == str(await page.eval(rows.format("error"))) == "2"
        refused = await page.eval("document.getElementById('k-refused').textContent")
        assert refused == str(await page.eval(rows.format("refused"))) == "3"
        statuses = await page.eval(
            "[...document.querySelectorAll('#recent tr.request .status')]"
            ".map((td) => td.textContent)"
        )
        assert statuses == [
            "200",
            "200 error mid-stream",
            "500 error",
            "400 refused",
            "400 refused",
            "400 refused",
        ]
        red = "document.querySelectorAll('#recent td.status.v-error').length"
        assert await page.eval(red) == 2  # only what the header counts is shown as an error
        told = await page.eval("document.getElementById('k-errors-kpi').title")
        assert "5xx" in told and "mid-stream" in told and "refused" in told


def _seconds(label: str) -> int:
    parts = [int(p) for p in label.split(":")]
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) == 3 else 0)


async def test_the_charts_have_clock_axes_and_value_scales_and_providers_show_their_room(
    tmp_path, mock, balancer_factory
):
    b = await balancer_factory(
        config_text(mock, ["a", "b"], settings="sticky_provider_duration: 0\n")
    )
    some = json.dumps({"anthropic-ratelimit-requests-limit": "50",
                       "anthropic-ratelimit-requests-remaining": "20"})  # fmt: skip
    none = json.dumps({"anthropic-ratelimit-requests-limit": "50",
                       "anthropic-ratelimit-requests-remaining": "0",
                       "anthropic-ratelimit-requests-reset": "2999-01-01T00:00:00Z"})  # fmt: skip
    mock.configure("a", Script(headers=some))
    mock.enqueue("b", Script(headers=none))
    await (await b.post(msg("to b", provider="b"))).read()
    for i in range(3):
        await (await b.post(msg(f"chart {i}", provider="a"))).read()
    data = await (await b.session.get(b.url + "/dashboard/data")).json()
    async with live(tmp_path, b.url) as page:
        await page.wait_for("document.querySelectorAll('#recent tr.request').length", 4)
        room = "document.querySelector('#providers tr[data-provider=\"{}\"] td.room').{}"
        assert await page.eval(room.format("a", "textContent")) == "40.0 %"
        assert re.fullmatch(r"none for [\d.]+ s", await page.eval(room.format("b", "textContent")))
        assert "requests: 0 of 50 left" in await page.eval(room.format("b", "title"))
        for chart, series, unit in (("ttft", "ttft", "ms"), ("tput", "throughput", "events/s")):
            labels = "[...document.querySelectorAll('#{} text.{}')].map((t) => t.textContent)"
            ys = [float(v) for v in await page.eval(labels.format(chart, "y-tick"))]
            assert len(ys) >= 2 and ys[0] == 0
            steps = {round(b - a, 6) for a, b in pairwise(ys)}
            assert len(steps) == 1 and steps.pop() > 0  # an even scale from zero
            assert ys[-1] >= max(v for _, v in data["series"][series])  # every point on it
            grid = f"document.querySelectorAll('#{chart} line.grid').length"
            assert await page.eval(grid) == len(ys)
            xs = await page.eval(labels.format(chart, "x-tick"))
            assert len(xs) >= 2 and all(re.fullmatch(r"\d\d:\d\d(:\d\d)?", x) for x in xs)
            gaps = {(_seconds(b) - _seconds(a)) % 86400 for a, b in pairwise(xs)}
            assert len(gaps) == 1 and gaps.pop() > 0  # clock times, evenly spaced
            assert (
                await page.eval(f"document.querySelector('#{chart} text.unit').textContent") == unit
            )


async def test_one_sessions_table_shows_cost_provider_and_the_cache_around_moves(
    tmp_path, mock, balancer_factory
):
    b = await balancer_factory(
        config_text(mock, ["a", "b"], settings="unhealthy_threshold: 10\n") + CLIENTS
    )
    headers = {"x-api-key": ALICE, "x-claude-code-session-id": "sess-unified-0001"}
    mock.configure("a", Script(cache_read=3000, input_tokens=100))
    await (await b.post(msg("turn 1", model="claude-haiku-4-5"), headers)).read()
    mock.enqueue("a", Script(status=500))
    turn2 = await b.post(msg("turn 2", model="claude-haiku-4-5"), headers)
    await turn2.read()
    assert turn2.headers["x-provider-used"] == "b"  # the session moved, its cache stayed at a
    data = await (
        await b.session.get(b.url + "/dashboard/data", headers={"x-api-key": ALICE})
    ).json()
    (session,) = data["sessions"]
    async with live(tmp_path, b.url, ALICE) as page:
        row = 'data-session="sess-unified-0001"'
        await page.wait_for(_cell("sessions", row, ".requests"), "2")
        cells = await page.eval(
            f"[...document.querySelectorAll('#sessions tr[{row}] td')].map((td) => td.textContent)"
        )
        assert cells[1:10] == [
            "alice", "claude-haiku-4-5", "b", "2", "3125/14", "96.0 %", "1",
            "a 96.8 % → b 0.0 %", f"${session['usd']:.4f}",
        ]  # fmt: skip
        assert await page.eval("document.getElementById('cache-sessions')") is None  # one table
        assert await page.eval("document.querySelectorAll('#sessions').length") == 1


async def test_a_client_key_sees_its_own_part_of_the_page(tmp_path, mock, balancer_factory):
    """With an admin key set, a client's key shows the page scoped to that client: its name
    in the header, its rows only, no refused-keys count (the admin's to see)."""
    bob = "sk-bob-dashboard-0000002"
    team = CLIENTS + f"  - {{name: bob, key: {bob}}}\n"
    settings = "admin_api_key: sk-admin-dashboard-00001\n"
    b = await balancer_factory(config_text(mock, ["a"], settings=settings) + team)
    await (await b.post(msg("from alice"), {"x-api-key": ALICE})).read()
    await (await b.post(msg("from bob"), {"x-api-key": bob})).read()
    async with live(tmp_path, b.url, ALICE) as page:
        await page.wait_for("document.getElementById('scope').textContent",
                            "alice: own requests only")  # fmt: skip
        clients = (
            "[...document.querySelectorAll('#recent tr.request')]"
            ".map((tr) => tr.children[1].textContent)"
        )
        assert await page.wait_for(clients, ["alice"]) == ["alice"]
        assert await page.eval("document.getElementById('k-auth-kpi').style.display") == "none"
        assert await page.eval("document.getElementById('k-requests').textContent") == "1"
        assert "bob" not in await page.eval("document.body.innerText")
