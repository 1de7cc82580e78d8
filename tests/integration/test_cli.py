"""The command line as a user runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from ccbalancer.mock import Script
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


async def _start(args: list[str], ready: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
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


async def test_demo_serves_claude_code_requests_with_simulated_providers():
    proc, seen = await _start(["demo", "--port", "0"], "curl -N")
    try:
        url = re.search(r"ANTHROPIC_BASE_URL=(\S+)", seen).group(1)  # type: ignore[union-attr]
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
