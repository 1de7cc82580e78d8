"""A hostile client, fuzzed (issue 14): random headers (non-UTF-8 bytes and control bytes
included), random JSON shapes and depths, random encodings and framing, sent over raw sockets
to a balancer running as its own process with healthy simulated providers behind it.

Whatever arrives: never a 5xx; every 4xx in the Anthropic envelope (the balancer answers its
HTTP parser's rejections in it too); never a traceback in its log; and its RSS stays below its
idle value plus 4 x ``max_body_bytes``, the default body budget (one process of its own, so
the figure is the balancer's alone; "idle" is after a warm-up with every kind of body).
Bounded: 300 examples, ~10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import socket
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccbalancer.mock import MockServer
from ccbalancer.tasks import TaskOwner

MAX_BODY = 4 * 1024 * 1024  # the balancer's max_body_bytes here; its body budget is 4x this
HEADER_NAMES = (
    b"x-api-key", b"authorization", b"anthropic-version", b"anthropic-beta", b"expect",
    b"x-claude-code-session-id", b"accept", b"x-custom", b"content-type", b"cookie",
)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Balancer:
    port: int
    process: psutil.Process
    log: Path
    idle_rss: int = 0
    peak_rss: int = 0
    statuses: list[int] = field(default_factory=list)


async def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(30):
        while True:
            assert proc.poll() is None, f"the balancer exited with {proc.returncode}"
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            await asyncio.sleep(0.05)


async def _sample_rss(balancer: Balancer) -> None:
    while True:
        with contextlib.suppress(psutil.Error):
            balancer.peak_rss = max(balancer.peak_rss, balancer.process.memory_info().rss)
        await asyncio.sleep(0.005)


@pytest.fixture
async def balancer(tmp_path: Path) -> AsyncIterator[Balancer]:
    mock = MockServer(port=0, seed=11, max_recorded=10)
    await mock.start()
    port = _free_port()
    log = tmp_path / "balancer.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(
        f'providers:\n  - {{name: a, type: anthropic, base_url: "{mock.anthropic_url("a")}", '
        f'auth_value: sk-prov-a-secret}}\nmodel_routes:\n  "*": [{{provider: a}}]\n'
        f"settings:\n  log_file_path: '{log}'\n  history: {{enabled: false}}\n"
        f"  max_body_bytes: {MAX_BODY}\n  cache: {{ttl: 5, max_bytes: 1000000}}\n"
        "  client_read_timeout: 1\n  client_body_timeout: 3\n  client_header_timeout: 2\n"
    )
    # glibc raises its mmap threshold after a large block is freed, and keeps later large
    # blocks in a heap it never gives back: fixed at 128 KB, RSS shows what is alive.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    with (tmp_path / "stderr.txt").open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ccbalancer", "serve", "-c", str(config), "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
    try:
        await _wait_listening(port, proc)
        state = Balancer(port, psutil.Process(proc.pid), log)
        # Warm up with each kind of body the examples send, three at once, so that the idle
        # value includes what serving them leaves allocated for good (buffers, the small-object
        # arenas, connections): what must stay bounded is growth beyond that.
        warm = [
            orjson.dumps(_messages(char * (MAX_BODY // len(char.encode()) - 400)))
            for char in ("w", "é", "中", "😀")
        ] + [
            orjson.dumps(_messages("d", metadata="X")).replace(b'"X"', b"[" + dense + b"]")
            for dense in (b",".join([b"{}"] * 40_000), b",".join([b"[]"] * 40_000))
        ]
        for body in warm:
            framed = _frame(b"POST", b"/v1/messages", [], body)
            answers = await asyncio.gather(*(_exchange(port, framed) for _ in range(3)))
            assert {status for status, _, _ in answers} <= {200, 429}
        await asyncio.sleep(0.5)
        state.idle_rss = state.peak_rss = state.process.memory_info().rss
        owner = TaskOwner("fuzz")
        owner.spawn(_sample_rss(state), "rss")
        try:
            yield state
        finally:
            await owner.close()
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
        await mock.close()
    problems = _log_problems(log)
    assert not problems, "\n".join(problems)
    stderr_text = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert "Traceback" not in stderr_text, stderr_text[-3000:]
    # the examples reached the application, not only the parser: answers and refusals both
    assert 200 in state.statuses and 429 in state.statuses, (
        len(state.statuses),
        sorted(set(state.statuses)),
    )
    assert any(400 <= status < 500 and status != 429 for status in state.statuses)


def _messages(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def _frame(method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    head = method + b" " + path + b" HTTP/1.1\r\nhost: 127.0.0.1\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    if not any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers):
        head += b"content-length: %d\r\n" % len(body)
    return head + b"\r\n" + body


async def _exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data``, read one answer (content-length, chunked, or up to EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(30):
            head = await reader.readuntil(b"\r\n\r\n")
            while head.startswith(b"HTTP/1.1 100"):
                head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                body = b""
                while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                    body += await reader.readexactly(size + 2)
                    body = body[:-2]
                await reader.readuntil(b"\r\n")
            else:
                body = await reader.read()
        return int(lines[0].split()[1]), headers, body
    finally:
        writer.close()


# -- what a hostile client sends -------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=40,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["valid", "shape", "deep", "dense", "big_text", "garbage"]))
    if kind == "valid":
        extra = draw(st.dictionaries(st.sampled_from(["metadata", "tools", "system", "x"]), JSON))
        return orjson.dumps(_messages(draw(st.text(max_size=200)), **extra))
    if kind == "shape":
        return orjson.dumps(draw(JSON))
    if kind == "deep":  # past orjson's write limit (255) and past its read limit (1024)
        depth = draw(st.integers(1, 1100))
        nested = b"[" * depth + b"1" + b"]" * depth
        return orjson.dumps(_messages("deep", metadata="X")).replace(b'"X"', nested)
    if kind == "dense":  # the amplification attack: ~24x when parsed
        count = draw(st.sampled_from([1, 1000, 40_000, (MAX_BODY - 200) // 3]))
        item = draw(st.sampled_from([b"{}", b"[]", b"0"]))
        dense = b"[" + b",".join([item] * count) + b"]"
        return orjson.dumps(_messages("dense", metadata="X")).replace(b'"X"', dense)
    if kind == "big_text":  # sizes that matter: small, half, just under and just over the cap
        size = draw(st.sampled_from([100, MAX_BODY // 2, MAX_BODY - 400, MAX_BODY + 4096]))
        return orjson.dumps(_messages(draw(st.sampled_from("aé中😀")) * (size // 4)))
    return draw(st.binary(max_size=300))


class Sent(bytes):
    """Request bytes that print as their head and size (a failing example stays readable).
    ``proper``: well framed, so the balancer must answer it (a malformed one may be cut off:
    the balancer answers the parser's error and closes, and the client, still sending, can
    get a reset or a broken pipe before it reads the answer)."""

    proper = False

    def __repr__(self) -> str:
        head = bytes(self[:400]).split(b"\r\n\r\n")[0]
        return f"<{len(self)} bytes: {head!r} ... {bytes(self[-40:])!r}>"


@st.composite
def requests(draw: st.DrawFn) -> Sent:
    body = draw(bodies())
    if draw(st.booleans()):  # half are otherwise proper: the body alone must be handled
        sent = Sent(
            _frame(b"POST", b"/v1/messages", [(b"content-type", b"application/json")], body)
        )
        sent.proper = True
        return sent
    encoding = draw(
        st.sampled_from([None, None, None, b"gzip", b"deflate", b"broken", b"br", b"x-unknown"])
    )
    headers: list[tuple[bytes, bytes]] = []
    if encoding in (b"gzip", b"deflate"):
        body = gzip.compress(body) if encoding == b"gzip" else zlib.compress(body)
        headers.append((b"content-encoding", encoding))
    elif encoding == b"broken":
        body = b"\x1f\x8b\x08\x00" + body[:100]
        headers.append((b"content-encoding", b"gzip"))
    elif encoding is not None:
        headers.append((b"content-encoding", encoding))
    value = st.one_of(
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.encode),
        st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    )
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=4)):
        headers.append((name, draw(value)))
    framing = draw(
        st.sampled_from(["length", "length", "length", "chunked", "bad_chunk", "both", "short"])
    )
    if framing == "chunked":
        cut = draw(st.integers(0, len(body)))
        parts = [p for p in (body[:cut], body[cut:]) if p]
        body = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        headers.append((b"transfer-encoding", b"chunked"))
    elif framing == "bad_chunk":
        body = b"zz\r\n" + body + b"\r\n0\r\n\r\n"
        headers.append((b"transfer-encoding", b"chunked"))
    elif framing == "both":  # a smuggling attempt
        headers += [(b"content-length", b"%d" % len(body)), (b"transfer-encoding", b"chunked")]
    elif framing == "short":  # the rest is taken for the next request on the connection
        headers.append((b"content-length", b"%d" % (len(body) // 2)))
    method = draw(st.sampled_from([b"POST"] * 6 + [b"GET", b"PUT"]))
    path = draw(
        st.sampled_from([b"/v1/messages"] * 4 + [b"/v1/messages/count_tokens", b"/x", b"/"])
    )
    return Sent(_frame(method, path, headers, body))


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sent=st.lists(requests(), min_size=1, max_size=3))
async def test_a_hostile_client_gets_4xx_envelopes_and_cannot_grow_memory(
    balancer: Balancer, sent: list[Sent]
) -> None:
    answers = await asyncio.gather(
        *(_exchange(balancer.port, data) for data in sent), return_exceptions=True
    )
    assert balancer.process.is_running()
    for data, answer in zip(sent, answers, strict=True):
        if isinstance(answer, ConnectionError) and not data.proper:
            continue
        assert not isinstance(answer, BaseException), answer
        status, headers, body = answer
        balancer.statuses.append(status)
        assert status < 500, (status, body[:300])
        if status >= 400:
            assert headers.get("content-type", "").startswith("application/json"), body[:300]
            payload = orjson.loads(body)
            assert payload["type"] == "error" and set(payload["error"]) == {"type", "message"}
    growth = balancer.peak_rss - balancer.idle_rss
    assert growth < 4 * MAX_BODY, f"RSS grew by {growth / 2**20:.1f} MB"


def _log_problems(log: Path) -> list[str]:
    problems = []
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if "exception" in record or "Traceback" in line or record.get("level") == "error":
            problems.append(line[:4000])
    return problems
