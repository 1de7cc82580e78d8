"""The command line as a user runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from ccbalancer.mock import Script
from ccbalancer.observe.history import History
from ccbalancer.observe.record import RequestRecord
from tests.conftest import config_text, msg, read_events

CLI = [sys.executable, "-m", "ccbalancer"]


async def _run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, cwd=cwd, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_serve_refuses_an_invalid_config_naming_file_key_and_reason(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "providers:\n  - {name: a, type: anthropic, base_url: 'http://x', auth_value: k}\n"
        "settings:\n  timeouts: {streaming: {read_timeout: -5}}\n"
    )
    code, _, err = await _run("serve", "-c", str(path), "--port", "0")
    assert code != 0
    assert str(path) in err
    assert "settings.timeouts.streaming.read_timeout" in err
    assert "greater than 0" in err


async def test_serve_without_a_config_file_says_how_to_make_one(tmp_path):
    code, _, err = await _run("serve", "--port", "0", cwd=tmp_path, env={"CCBALANCER_CONFIG": ""})
    assert code != 0
    assert "config.yaml" in err and "ccbalancer init" in err


async def test_init_writes_a_starter_that_check_accepts(tmp_path):
    target = tmp_path / "config.yaml"
    code, out, _ = await _run("init", str(target))
    assert code == 0 and target.exists()
    assert "auth_value" in target.read_text() and "#" in target.read_text()
    code, out, err = await _run("check", "-c", str(target))
    assert code == 0, err
    assert "routes" in out and "*sonnet*" in out and "anthropic-official" in out
    code, _, err = await _run("init", str(target))
    assert code != 0 and "exists" in err  # never overwrites silently


async def test_check_probe_reports_each_provider(tmp_path, mock):
    mock.configure("down", Script(status=503))
    path = tmp_path / "c.yaml"
    path.write_text(config_text(mock, ["up", "down"]))
    code, out, _ = await _run("check", "-c", str(path), "--probe")
    assert code == 1  # one provider is down
    assert re.search(r"up\s+HTTP 200", out)
    assert re.search(r"down\s+HTTP 503", out)
    assert "sk-prov-" not in out


async def test_check_shows_what_each_provider_accepts_and_its_request_options(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n"
        "  - {name: official, type: anthropic, base_url: 'http://x'}\n"
        "  - {name: relay, type: anthropic, base_url: 'http://y', strip_billing_header: true,\n"
        "     capabilities: {files: false, server_tools: [web_search]},\n"
        "     betas: {drop: ['context-1m-*']}}\n"
        "  - {name: oa, type: openai, base_url: 'http://z/v1', prompt_cache_key: true}\n"
    )
    code, out, err = await _run("check", "-c", str(path))
    assert code == 0, err
    lines = out.splitlines()

    def accepts(name: str) -> str:
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(name + " "))
        return "\n".join(lines[at + 1 : at + 3])

    assert "images yes, files (PDF) yes, server tools all, thinking yes" in accepts("official")
    relay = accepts("relay")
    assert "files (PDF) no, server tools web_search" in relay
    assert "betas drop context-1m-*; strip_billing_header" in relay
    oa = accepts("oa")
    assert "images yes, files (PDF) no, server tools none, thinking yes" in oa
    assert "options: prompt_cache_key" in oa


async def test_legacy_keys_of_the_original_balancer_are_accepted_with_a_warning(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n  - {name: a, type: anthropic, base_url: 'http://x', auth_value: k}\n"
        "settings:\n  log_color: true\n  oauth: {enable_persistence: true}\n"
    )
    code, _out, err = await _run("check", "-c", str(path))
    assert code == 0
    assert "settings.log_color" in err and "settings.oauth" in err


async def _start(
    args: list[str], ready: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    assert proc.stdout is not None
    seen = ""
    async with asyncio.timeout(30):
        while ready not in seen:
            line = await proc.stdout.readline()
            if not line:
                raise AssertionError(f"process exited early: {seen}")
            seen += line.decode()
    return proc, seen


async def test_demo_serves_claude_code_requests_and_keeps_its_history_for_stats(tmp_path):
    temp = {**os.environ, "TMPDIR": str(tmp_path)}  # where the demo's history folder goes
    proc, seen = await _start(["demo", "--port", "0"], "Ctrl-C stops it.", env=temp)
    try:
        url = re.search(r"ANTHROPIC_BASE_URL=(\S+)", seen).group(1)  # type: ignore[union-attr]
        # the first address a newcomer reads is the balancer's, then its dashboard
        assert re.findall(r"http://[\w.:]+", seen)[:2] == [url, url]
        assert f"the balancer is running at {url}\n  dashboard: {url}/dashboard\n" in seen
        async with aiohttp.ClientSession() as session:
            for i in range(4):  # the flaky provider fails some; the client never notices
                resp = await session.post(
                    url + "/v1/messages", json=msg(f"hello {i}"), headers={"x-api-key": "demo"}
                )
                events = await read_events(resp)
                assert resp.status == 200
                assert [n for n, _ in events][-1] == "message_stop"
            resp = await session.post(
                url + "/v1/messages", json=msg("hi", model="claude-haiku-4-5")
            )
            await resp.read()
            assert resp.headers["x-provider-used"] == "openai"
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await proc.wait()
    assert code == 0
    assert proc.stdout is not None
    seen += (await proc.stdout.read()).decode()
    command = re.search(r"see it with: (ccbalancer stats --db (\S+))", seen)
    assert command is not None, seen
    assert f"history stays in {command.group(2)}: {command.group(1)}" in seen  # said at exit too
    assert Path(command.group(2)).parent.parent == tmp_path
    code, out, err = await _run(*command.group(1).split()[1:])
    assert code == 0, err
    assert out.startswith("ccbalancer stats: last 1h, 5 requests, ")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_shutdown_drains_then_ends_remaining_streams_with_an_error_event(sig, tmp_path, mock):
    mock.configure("a", Script(events=200, delay=0.05))  # ~10 s: outlives the drain timeout
    mock.configure("quick", Script(events=5, delay=0.1))
    path = tmp_path / "c.yaml"
    path.write_text(
        config_text(
            mock,
            ["a", "quick"],
            routes={"*quick*": ["quick"], "*": ["a"]},
            settings="drain_timeout: 1.5\n",
        )
    )
    proc, _ = await _start(["serve", "-c", str(path), "--port", "0"], "listening")
    try:
        port = await _port_of(proc)
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/v1/messages"
            long_resp = await session.post(url, json=msg("long"))
            quick_resp = await session.post(url, json=msg("q", model="quick-model"))
            await long_resp.content.readany()
            proc.send_signal(sig)
            quick = await read_events(quick_resp)
            long = await read_events(long_resp)
        assert [n for n, _ in quick][-1] == "message_stop"  # finished within the drain
        assert [n for n, _ in long][-1] == "error"  # cut after the drain, properly
        assert "shutting down" in long[-1][1]["error"]["message"]
    finally:
        async with asyncio.timeout(30):
            code = await proc.wait()
    assert code == 0


async def _port_of(proc: asyncio.subprocess.Process) -> int:
    # the listening line was consumed by _start; ask the OS which port the child listens on
    import psutil

    async with asyncio.timeout(10):
        while True:
            conns = [c for c in psutil.Process(proc.pid).net_connections() if c.status == "LISTEN"]
            if conns:
                return int(conns[0].laddr.port)
            await asyncio.sleep(0.05)


# -- the first hour: errors a newcomer meets ----------------------------------------------


@pytest.mark.parametrize("command", ["serve", "demo"])
async def test_a_busy_port_is_one_line_naming_it_and_how_to_pick_another(command, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    path = tmp_path / "c.yaml"
    path.write_text("providers:\n  - {name: a, type: anthropic, base_url: 'http://x'}\n")
    args = ["-c", str(path)] if command == "serve" else []
    try:
        code, out, err = await _run(command, *args, "--port", str(port), cwd=tmp_path)
    finally:
        taken.close()
    assert code == 2
    assert "Traceback" not in err and out == ""
    # (other stderr lines: asyncio debug mode's slow-callback notes, inherited from pytest)
    assert [line for line in err.splitlines() if line.startswith("ccbalancer:")] == [
        f"ccbalancer: cannot listen on 127.0.0.1:{port}: port {port} is already in use; "
        f"pick another port with --port, e.g. --port {port + 1}"
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["check", "-c", "{config}"],
        ["stats", "--db", "{db}"],
        ["demo", "--port", "0"],
    ],
)
async def test_a_reader_that_stops_early_gets_no_traceback(args, tmp_path, mock):
    """``ccbalancer check | head``: stdout's reader is gone before the command writes."""
    config = tmp_path / "c.yaml"
    config.write_text(config_text(mock, ["a"]))
    db = tmp_path / "h.sqlite3"
    history = History(str(db))
    history.start()
    history.add(RequestRecord(request_id="r1", model="m", started=time.time(), provider="a"))
    history.close()
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the child starts: its first write meets a broken pipe
    try:
        filled = [a.format(config=config, db=db) for a in args]
        proc = await asyncio.create_subprocess_exec(
            *CLI, *filled, stdout=write_end, stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )  # fmt: skip
    finally:
        os.close(write_end)
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert "Traceback" not in err.decode() and "BrokenPipeError" not in err.decode()
    assert proc.returncode in (0, 141)  # argparse's --version swallows the error itself
    if args[0] != "--version":
        assert proc.returncode == 141  # 128 + SIGPIPE, as a shell reports `yes | head`


BROKEN = """\
providers:
  - name: relay-a
    type: anthropic
    base_url: https://a.example.com
  - name: relay-b
    type: anthropic
    base_ulr: https://b.example.com
    weight: 0
model_routes:
  "*":
    - {provider: relay-a, priority: 1}
settings:
  auth: {enabled: true, api_key: [], exempt_paths: [/health]}
  timeouts: {streaming: {read_timeout: -5}}
  selection_strategy: fastest
"""


async def test_check_lists_every_problem_with_line_name_and_a_suggestion(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(BROKEN)
    code, out, err = await _run("check", "-c", str(path))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"ccbalancer: invalid config: {path}: 6 problems:",
        "  line 5: providers[1] (relay-b).base_url: required",
        "  line 7: providers[1] (relay-b).base_ulr: unknown key; did you mean base_url?",
        "  line 8: providers[1] (relay-b).weight: must be greater than 0",
        "  line 13: settings.auth: auth.enabled is true but auth.api_key is empty",
        "  line 14: settings.timeouts.streaming.read_timeout: must be greater than 0",
        "  line 15: settings.selection_strategy: must be 'priority', 'round_robin', "
        "'weighted', 'random' or 'least_latency'",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("providers: []\n", "line 1: providers: needs at least 1 entry"),
        (
            "providers:\n  - {name: '', type: openai, base_url: 'http://x', max_tokens: lots}\n",
            "line 2: providers[0].name: must not be empty",
        ),
        (
            "providers:\n  - {name: a, type: openai, base_url: 'http://x', max_tokens: lots}\n",
            "line 2: providers[0] (a).max_tokens: must be a whole number",
        ),
        (
            "providers:\n  - {name: a, type: anthropic, base_url: 'http://x', auth_type: oauth}\n",
            "line 2: providers[0] (a).auth_type: must be 'api_key' or 'auth_token'; OAuth login "
            "is not supported: auth_value: passthrough forwards each client's own key",
        ),
        (
            "providers:\n  - {name: a, type: anthropic, base_url: 'http://x'}\nmodel_routes:\n"
            "  '*': [{provider: a}, {provider: b}]\n",
            "line 4: model_routes.*[1].provider: unknown provider 'b'",
        ),
        (
            "providers:\n  - {name: a, type: anthropic, base_url: '${RELAY_URL}'}\n",
            "line 2: providers[0] (a).base_url: environment variable RELAY_URL is not set",
        ),
    ],
)
async def test_check_says_what_is_wrong_in_our_words(text, expected, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "RELAY_URL"}
    proc = await asyncio.create_subprocess_exec(
        *CLI, "check", "-c", str(path), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, err_bytes = await proc.communicate()
    code, err = proc.returncode, err_bytes.decode()
    assert code == 2
    assert err.startswith(f"ccbalancer: invalid config: {path}: ")
    assert expected in err, err
    assert "Input should" not in err and "Value error" not in err


ORIGINAL = """\
# the shape the original balancer's test framework writes
providers:
  - {name: "Primary Relay", type: anthropic, base_url: "http://127.0.0.1:1/p",
     auth_type: api_key, auth_value: test-key, enabled: true, priority: 1, streaming_mode: auto}
  - {name: "Backup Relay", type: openai, base_url: "http://127.0.0.1:1/b/v1",
     auth_type: api_key, auth_value: test-key, enabled: true, priority: 2,
     big_model: gpt-4o, small_model: gpt-4o-mini}
model_routes:
  "test-model":
    - {provider: "Primary Relay", model: passthrough, priority: 1}
    - {provider: "Backup Relay", model: passthrough, priority: 2, enabled: false}
settings:
  selection_strategy: priority
  timeouts:
    non_streaming: {connect_timeout: 10, read_timeout: 30, pool_timeout: 10}
    streaming: {connect_timeout: 10, read_timeout: 30, pool_timeout: 10, chunk_timeout: 30,
                first_chunk_timeout: 30, processing_timeout: 10}
    caching: {deduplication_timeout: 60, cache_operation_timeout: 5}
    health_check: {timeout: 10, connect_timeout: 5}
  sticky_provider_duration: 30
  failure_cooldown: 30
  idle_recovery_interval: 300
  unhealthy_threshold: 2
  unhealthy_reset_on_success: true
  unhealthy_reset_timeout: 60
  unhealthy_exception_patterns: [connection, timeout, ssl, network]
  unhealthy_response_body_patterns: ['"error"\\s*:\\s*".*insufficient.*credits"', 'event:\\s*error']
  unhealthy_http_codes: [402, 403, 404, 408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524]
  failover_error_types: [connection_error, timeout_error]
  failover_http_codes: [502, 503]
  client_disconnect_watchdog: {enabled: true, detection_methods: {heartbeat: {interval: 60}}}
  log_level: DEBUG
  log_color: true
  log_file_path: logs/test-logs.jsonl
  enable_detailed_request_logging: true
  request_timeout: 30
  host: 127.0.0.1
  port: 8999
  app_name: Balancer - Test Mode
  app_version: 0.1.6-test
  reload: false
  reload_includes: ["*.py", "config.yaml"]
  oauth: {enable_persistence: false, enable_auto_refresh: false}
  deduplication: {enabled: true, include_max_tokens_in_signature: false, sse_error_cleanup_delay: 3}
  testing: {simulate_delay: false, delay_seconds: 0, delay_trigger_keywords: []}
"""


async def test_a_config_in_the_original_balancers_shape_is_accepted_with_one_warning(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(ORIGINAL)
    code, out, err = await _run("check", "-c", str(path))
    assert code == 0, err
    # the disabled route entry is left out, as the original did
    assert re.search(r"test-model\s+-> 1:Primary Relay\(passthrough\)$", out, re.M)
    warnings = [line for line in err.splitlines() if line.startswith("ccbalancer: warning:")]
    assert len(warnings) == 1 and "keys of the original balancer" in warnings[0]
    assert (
        "  providers[].priority: in 2 providers; no meaning here: the order is "
        "model_routes[].priority" in err.splitlines()
    )
    for key in (
        "providers[].streaming_mode", "providers[].big_model", "settings.oauth",
        "settings.testing", "settings.enable_detailed_request_logging", "settings.request_timeout",
        "settings.timeouts.streaming.chunk_timeout", "settings.timeouts.health_check",
        "settings.timeouts.caching.cache_operation_timeout", "settings.client_disconnect_watchdog",
    ):  # fmt: skip
        assert f"\n  {key}" in err, key


async def test_check_and_serve_warn_about_a_credential_whose_variable_is_unset(tmp_path):
    target = tmp_path / "config.yaml"
    assert (await _run("init", str(target)))[0] == 0
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    proc = await asyncio.create_subprocess_exec(
        *CLI, "check", "-c", str(target), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, err_bytes = await proc.communicate()
    assert proc.returncode == 0  # a warning, not a failure
    expected = (
        "providers[0] (anthropic-official).auth_value is empty because ${ANTHROPIC_API_KEY} "
        "is not set: every request to anthropic-official will fail upstream (401)"
    )
    assert expected in err_bytes.decode()
    assert "relay" not in err_bytes.decode()  # disabled providers are not warned about
    code, _, err = await _run("check", "-c", str(target), env={"ANTHROPIC_API_KEY": ""})
    assert code == 0 and "${ANTHROPIC_API_KEY} is set but empty" in err
    code, _, err = await _run("check", "-c", str(target), env={"ANTHROPIC_API_KEY": "sk-x-1"})
    assert code == 0 and "auth_value is empty" not in err

    proc, seen = await _start(["serve", "-c", str(target), "--port", "0"], "listening", env=env)
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        await proc.wait()
    assert expected in seen
