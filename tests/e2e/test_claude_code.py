"""The real Claude Code CLI, run offline against the balancer and the simulated providers.

Each test runs ``claude -p`` once (non-interactive, ``stream-json`` output) with a throw-away
HOME and cwd, talking only to the balancer on 127.0.0.1 (CLAUDE_CODE.md section 1). Claude
Code retries failed requests itself, for minutes; these tests want the balancer to hide
provider trouble, so the routes always leave a healthy candidate and any ``api_retry`` report
from the CLI stops the run at once and fails the test.

The binary comes from ``CCB_CLAUDE_BIN`` (set by scripts/test), else the pinned install under
``.cache/claude-code``, else ``/opt/cc``; without any of them the tests are skipped. Tests
that must hold for the next release too (``claude_versions``) also run ``CCB_CLAUDE_BIN_NEXT``
(2.1.332, installed by scripts/test under ``.cache/claude-code-2.1.332``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import struct
import zlib
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ccbalancer.mock import DEMO_PROVIDERS, MockServer, Script
from ccbalancer.mock.demo import demo_config_text
from tests.conftest import config_text, msg

pytestmark = [pytest.mark.e2e, pytest.mark.claude_cli, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
FALLBACK_BINARIES = (
    REPO / ".cache/claude-code/node_modules/.bin/claude",
    Path("/opt/cc/node_modules/.bin/claude"),
)
MODEL = "claude-sonnet-4-5"
CLI_TIMEOUT = 120.0  # per CLI run; a healthy run takes 1-3 s
LINE_LIMIT = 16 * 1024 * 1024  # one stream-json line holds a whole message
STDERR_TAIL = 4000


@pytest.fixture(scope="module")
def claude_bin() -> str:
    configured = os.environ.get("CCB_CLAUDE_BIN")
    if configured:
        # set on purpose (CI): a wrong path is a broken setup, not a reason to skip quietly
        if not os.access(configured, os.X_OK):
            pytest.fail(f"CCB_CLAUDE_BIN={configured!r} is not an executable file")
        return configured
    for candidate in FALLBACK_BINARIES:
        if os.access(candidate, os.X_OK):
            return str(candidate)
    searched = ", ".join(str(p) for p in FALLBACK_BINARIES)
    pytest.skip(f"Claude Code CLI not installed: CCB_CLAUDE_BIN unset and none of {searched}")


NEXT_VERSION = "2.1.332"
NEXT_BINARY = REPO / f".cache/claude-code-{NEXT_VERSION}/node_modules/.bin/claude"


@pytest.fixture(params=["pinned", NEXT_VERSION])
def claude_versions(request: pytest.FixtureRequest, claude_bin: str) -> str:
    """The pinned CLI, then the next release: a test using this runs on both."""
    if request.param == "pinned":
        return claude_bin
    configured = os.environ.get("CCB_CLAUDE_BIN_NEXT")
    if configured:
        if not os.access(configured, os.X_OK):
            pytest.fail(f"CCB_CLAUDE_BIN_NEXT={configured!r} is not an executable file")
        return configured
    if os.access(NEXT_BINARY, os.X_OK):
        return str(NEXT_BINARY)
    if os.environ.get("CCB_CLAUDE_BIN"):  # CI set the pinned one up: the next is owed too
        pytest.fail(f"Claude Code {NEXT_VERSION} not installed (scripts/test installs it)")
    pytest.skip(f"Claude Code {NEXT_VERSION} not installed at {NEXT_BINARY}")


@dataclass
class CliRun:
    """What one ``claude -p --output-format stream-json`` run printed."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    noise: list[str] = field(default_factory=list)  # stdout lines that are not JSON objects
    stderr: str = ""
    returncode: int | None = None
    timed_out: bool = False

    def add_line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").strip()
        if not line:
            return
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            self.messages.append(value)
        else:
            self.noise.append(line)

    def of(self, kind: str, subtype: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if m.get("type") == kind and (subtype is None or m.get("subtype") == subtype)
        ]

    @property
    def retries(self) -> list[dict[str, Any]]:
        return self.of("system", "api_retry")

    @property
    def result(self) -> dict[str, Any] | None:
        results = self.of("result")
        return results[-1] if results else None

    @property
    def session_id(self) -> str | None:
        init = self.of("system", "init")
        return init[0].get("session_id") if init else None

    def blocks(self, kind: str, block_type: str) -> list[dict[str, Any]]:
        """Content blocks of type ``block_type`` in the ``assistant`` / ``user`` messages."""
        out = []
        for message in self.of(kind):
            content = message.get("message", {}).get("content")
            if isinstance(content, list):
                out += [b for b in content if isinstance(b, dict) and b.get("type") == block_type]
        return out

    def report(self) -> str:
        lines = [
            f"claude exit status: {self.returncode}, timed out: {self.timed_out}",
            "stream-json messages: "
            + ", ".join(f"{m.get('type')}/{m.get('subtype', '-')}" for m in self.messages),
        ]
        lines += [f"api_retry: {json.dumps(r)[:500]}" for r in self.retries]
        if self.result is not None:
            shown = {k: self.result.get(k) for k in ("subtype", "is_error", "result")}
            lines.append(f"result: {json.dumps(shown)[:2000]}")
        lines += [f"stdout (not JSON): {line[:500]}" for line in self.noise[:20]]
        lines.append(f"stderr (last {STDERR_TAIL} chars):\n{self.stderr[-STDERR_TAIL:]}")
        return "\n".join(lines)


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the session started for this CLI run (its Bash tool children included)."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _drain(stream: asyncio.StreamReader, sink: list[bytes]) -> None:
    while chunk := await stream.read(65536):
        sink.append(chunk)


async def run_claude(
    binary: str,
    base_url: str,
    prompt: str,
    home: Path,
    cwd: Path,
    tools: str = "Bash",
    api_key: str = "sk-test",
) -> CliRun:
    """Runs the CLI to completion (bounded by CLI_TIMEOUT) without blocking the event loop:
    the balancer it talks to lives in this same loop. Stops early on the first api_retry."""
    home.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": api_key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
    }
    args = ["-p", prompt, "--output-format", "stream-json", "--verbose"]
    args += ["--allowedTools", tools, "--model", MODEL]
    proc = await asyncio.create_subprocess_exec(
        binary,
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, so a kill reaches its tool children
        limit=LINE_LIMIT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    run = CliRun()
    stderr: list[bytes] = []
    try:
        async with asyncio.timeout(CLI_TIMEOUT), asyncio.TaskGroup() as group:
            group.create_task(_drain(proc.stderr, stderr))
            async for line in proc.stdout:
                run.add_line(line)
                if run.retries:  # the balancer let an error through; don't sit out the backoff
                    _kill_group(proc)
            await proc.wait()
    except TimeoutError:
        run.timed_out = True
    finally:
        if proc.returncode is None:
            _kill_group(proc)
            await proc.wait()
    run.returncode = proc.returncode
    run.stderr = b"".join(stderr).decode("utf-8", "replace")
    print(run.report())  # pytest shows it for failing tests only
    return run


def assert_succeeded(run: CliRun, expected_text: str) -> dict[str, Any]:
    """The run ended with a successful result holding ``expected_text``, without any retry."""
    assert not run.timed_out, f"claude did not finish within {CLI_TIMEOUT:g} s\n{run.report()}"
    assert not run.retries, (
        f"claude had to retry: the balancer let an error through\n{run.report()}"
    )
    result = run.result
    assert result is not None, f"no stream-json result message\n{run.report()}"
    assert result.get("subtype") == "success", run.report()
    assert result.get("is_error") is False, run.report()
    assert expected_text in str(result.get("result")), run.report()
    assert run.returncode == 0, run.report()
    return result


def failing_first_config(mock: MockServer) -> str:
    """Route ``*``: ``bad`` (priority 1) answers every request with 529, ``good`` is healthy."""
    mock.configure(
        "bad", Script(status=529, error_type="overloaded_error", error_message="Overloaded")
    )
    return config_text(mock, ["bad", "good"])


async def test_prompt_completes_while_the_first_provider_fails_every_request(
    claude_bin, mock, balancer_factory, tmp_path
):
    mock.configure("good", Script(text="CCB_FAILOVER_OK from the healthy provider"))
    b = await balancer_factory(failing_first_config(mock))

    run = await run_claude(
        claude_bin, b.url, "Reply with exactly: PONG", tmp_path / "home", tmp_path / "work"
    )

    assert_succeeded(run, "CCB_FAILOVER_OK from the healthy provider")
    assert len(mock.requests("bad")) >= 1, "the failing provider was never tried"
    assert len(mock.requests("good")) == 1
    assert b.runtime.health.get("bad").failures >= 1
    assert b.runtime.health.get("good").failures == 0


async def test_tool_use_round_trip_runs_bash_and_returns_its_output(
    claude_bin, mock, balancer_factory, tmp_path
):
    """The CLI executes the streamed tool_use, sends the tool_result back through the balancer,
    and the mock's answer quotes that result."""
    mock.configure("good", Script(reply="tool_then_text", tool_command="echo CCB_TOOL_OK"))
    b = await balancer_factory(failing_first_config(mock))

    run = await run_claude(
        claude_bin, b.url, "Run the command you are given.", tmp_path / "home", tmp_path / "work"
    )

    assert_succeeded(run, "CCB_TOOL_OK")
    # the CLI ran the shell: the result is the command's output, not its text
    (tool_use,) = run.blocks("assistant", "tool_use")
    assert tool_use["name"] == "Bash"
    assert tool_use["input"]["command"] == "echo CCB_TOOL_OK"
    (cli_result,) = run.blocks("user", "tool_result")
    assert cli_result["tool_use_id"] == tool_use["id"]
    assert cli_result.get("is_error") is False, run.report()
    assert str(cli_result["content"]).strip() == "CCB_TOOL_OK", run.report()

    first, second = mock.requests("good")  # exactly two model calls reached the healthy one
    assert not _tool_results(first.body)
    (sent,) = _tool_results(second.body)
    assert sent["tool_use_id"] == tool_use["id"]
    assert "CCB_TOOL_OK" in json.dumps(sent["content"])
    assert "echo" not in json.dumps(sent["content"])
    echoed = second.body["messages"][-2]  # the assistant turn, echoed back verbatim
    assert echoed["role"] == "assistant"
    assert [blk["id"] for blk in echoed["content"] if blk.get("type") == "tool_use"] == [
        tool_use["id"]
    ]
    # the failing provider was tried first and the balancer moved on without the CLI noticing
    assert len(mock.requests("bad")) >= 1
    assert b.runtime.health.get("bad").failures >= 1


async def test_the_demo_answers_list_the_files_with_a_whole_tool_turn(
    claude_bin, mock, balancer_factory, tmp_path
):
    """A newcomer points Claude Code at the demo and types "list the files here": the demo's
    providers (the flaky one too) call Bash ``ls``, the CLI runs it and sends the listing
    back, and the final answer is text about what ``ls`` printed."""
    for name, script in DEMO_PROVIDERS.items():
        mock.configure(name, script)
    b = await balancer_factory(demo_config_text(mock.url, 0, tmp_path / "history.sqlite3"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("hello\n")

    run = await run_claude(claude_bin, b.url, "list the files here", tmp_path / "home", work)

    result = assert_succeeded(run, "I ran `ls` in")
    (tool_use,) = run.blocks("assistant", "tool_use")
    assert tool_use["name"] == "Bash" and tool_use["input"]["command"] == "ls"
    (cli_result,) = run.blocks("user", "tool_result")
    assert cli_result.get("is_error") is False, run.report()
    assert str(cli_result["content"]).strip() == "notes.txt", run.report()  # Bash really ran
    assert "1 entry: notes.txt" in str(result["result"])
    assert result.get("stop_reason") == "end_turn", run.report()


async def test_mid_stream_cut_makes_claude_code_resend_the_same_conversation(
    claude_bin, mock, balancer_factory, tmp_path
):
    """After content has streamed the balancer cannot fail over; it ends the stream with an
    ``event: error``. Claude Code then re-sends the turn (non-streaming, CLAUDE_CODE.md
    section 6) and succeeds. Had the balancer ended the stream cleanly instead, the CLI would
    have kept the partial text and asked to "continue" with extra messages."""
    mock.enqueue("good", Script(text="one two three four five six", events=6, cut_after=5))
    mock.configure("good", Script(text="CCB_RESENT_OK after the cut"))
    b = await balancer_factory(config_text(mock, ["good"]))

    run = await run_claude(
        claude_bin, b.url, "Reply with exactly: PONG", tmp_path / "home", tmp_path / "work"
    )

    assert_succeeded(run, "CCB_RESENT_OK after the cut")
    assert "one two" not in json.dumps(run.messages)  # the partial answer was discarded
    cut, resent = mock.requests("good")
    assert cut.body is not None and resent.body is not None
    assert resent.body["messages"] == cut.body["messages"]
    assert b.runtime.health.get("good").failures == 1


async def test_a_client_over_its_budget_stops_at_once_and_shows_the_budget_message(
    claude_bin, mock, balancer_factory, tmp_path
):
    """Issue 18: a 429 for a spent budget carries ``retry-after`` until the reset and
    ``x-should-retry: false``, so Claude Code gives up at once with the balancer's words
    instead of retrying for minutes (CLAUDE_CODE.md section 6)."""
    key = "sk-alice-over-budget-000001"
    clients = f"clients:\n  - {{name: alice, key: {key}, usd_per_day: 0.00001}}\n"
    b = await balancer_factory(config_text(mock, ["good"]) + clients)
    spent = await b.post(msg("spend the day's budget"), {"x-api-key": key})
    assert spent.status == 200
    await spent.read()

    run = await run_claude(
        claude_bin, b.url, "Reply with exactly: PONG", tmp_path / "home", tmp_path / "work",
        api_key=key,
    )  # fmt: skip

    assert not run.timed_out, run.report()
    assert not run.retries, f"claude retried a spent budget\n{run.report()}"
    result = run.result
    assert result is not None and result.get("is_error") is True, run.report()
    shown = str(result.get("result"))
    assert "client 'alice' has used" in shown and "usd_per_day" in shown, run.report()
    assert "resets at" in shown, run.report()
    assert len(mock.requests("good")) == 1  # only the request that spent it
    refused = [r for r in b.runtime.recent.rows() if r["status"] == 429]
    assert len(refused) == 1, "claude sent the refused request more than once"


def _tool_results(body: dict[str, Any] | None) -> list[dict[str, Any]]:
    assert body is not None
    content = body["messages"][-1].get("content")
    if not isinstance(content, list):
        return []
    return [block for block in content if block.get("type") == "tool_result"]


# Headers that legitimately differ between a direct and a balanced request: the credential is
# the provider's, the encoding is pinned to identity (SSE must not be compressed in transit),
# hop-by-hop headers stay on their hop, and each CLI run has its own session id.
VARYING_HEADERS = {"x-api-key", "accept-encoding", "connection", "host", "content-length"}
SESSION_HEADER = "x-claude-code-session-id"


def _normalised_body(body: dict[str, Any] | None, home: Path, session_id: str) -> Any:
    """The body without what differs between two fresh CLI runs: HOME's path (named in the
    system prompt) and metadata.user_id's device and session ids, which are checked first."""
    assert body is not None
    user = json.loads(body["metadata"]["user_id"])
    assert user["session_id"] == session_id
    body = {**body, "metadata": {**body["metadata"], "user_id": "<user>"}}
    return json.loads(json.dumps(body).replace(str(home), "<HOME>"))


async def test_claude_code_request_reaches_the_upstream_intact(
    claude_bin, mock, balancer_factory, tmp_path
):
    """The same prompt is sent once straight to the mock and once through the balancer (whose
    first provider fails): both upstream copies must equal what the CLI sent on its own —
    query ``beta=true``, ``anthropic-beta``, the session id header, every body field."""
    b = await balancer_factory(failing_first_config(mock))
    prompt = "Reply with exactly: PONG"
    work = tmp_path / "work"  # the same cwd for both runs: it is part of the system prompt
    direct_run = await run_claude(
        claude_bin, mock.anthropic_url("direct"), prompt, tmp_path / "home-direct", work
    )
    assert_succeeded(direct_run, "Hello from the ccbalancer mock.")
    balanced_run = await run_claude(claude_bin, b.url, prompt, tmp_path / "home-balanced", work)
    assert_succeeded(balanced_run, "Hello from the ccbalancer mock.")

    (direct,) = mock.requests("direct")
    sent_to = [mock.requests("bad")[0], *mock.requests("good")]
    assert len(sent_to) == 2
    assert direct.query == "beta=true"
    assert "claude-code-20250219" in direct.headers["anthropic-beta"].split(",")
    direct_body = _normalised_body(direct.body, tmp_path / "home-direct", direct_run.session_id)
    for upstream in sent_to:
        assert upstream.query == "beta=true"
        assert upstream.headers["anthropic-beta"] == direct.headers["anthropic-beta"]
        assert upstream.headers["anthropic-version"] == direct.headers["anthropic-version"]
        assert upstream.headers[SESSION_HEADER] == balanced_run.session_id
        assert upstream.headers["x-api-key"] == f"sk-prov-{upstream.path.split('/')[1]}-secret"
        ignored = VARYING_HEADERS | {SESSION_HEADER}
        assert {k: v for k, v in upstream.headers.items() if k not in ignored} == {
            k: v for k, v in direct.headers.items() if k not in ignored
        }
        body = _normalised_body(upstream.body, tmp_path / "home-balanced", balanced_run.session_id)
        assert body == direct_body


async def test_prompt_completes_through_an_openai_format_provider(
    claude_bin, mock, balancer_factory, tmp_path
):
    """Chat-completions chunks converted on the fly must satisfy Claude Code's stream checks
    (message_start first, message_delta with a stop reason, message_stop)."""
    mock.configure("oa", Script(text="CCB_OPENAI_OK converted from chat completions"))
    b = await balancer_factory(
        config_text(mock, [("oa", "openai")], routes={"*": [("oa", "gpt-4o")]})
    )

    run = await run_claude(
        claude_bin, b.url, "Reply with exactly: PONG", tmp_path / "home", tmp_path / "work"
    )

    result = assert_succeeded(run, "CCB_OPENAI_OK converted from chat completions")
    assert result.get("stop_reason") == "end_turn", run.report()
    (upstream,) = mock.requests("oa")
    assert upstream.path == "/oa/v1/chat/completions"
    assert upstream.body is not None
    assert upstream.body["model"] == "gpt-4o"
    assert upstream.body["stream"] is True
    assert "x-api-key" not in upstream.headers
    assert upstream.headers["authorization"] == "Bearer sk-prov-oa-secret"


async def test_tool_use_round_trip_through_an_openai_format_provider(
    claude_bin, mock, balancer_factory, tmp_path
):
    """Issue 5's end-to-end proof: the first provider (Anthropic format) fails, the OpenAI one
    streams a tool call as chat-completion chunks; Claude Code runs Bash on the converted
    tool_use and sends the tool_result back, which must arrive as an OpenAI ``tool`` message."""
    mock.configure("bad", Script(status=529, error_type="overloaded_error"))
    mock.configure("oa", Script(reply="tool_then_text", tool_command="echo CCB_OA_TOOL_OK"))
    text = config_text(
        mock, ["bad", ("oa", "openai")], routes={"*": [("bad", "passthrough"), ("oa", "gpt-4o")]}
    )
    b = await balancer_factory(text)

    run = await run_claude(
        claude_bin, b.url, "Run the command you are given.", tmp_path / "home", tmp_path / "work"
    )

    assert_succeeded(run, "CCB_OA_TOOL_OK")
    (tool_use,) = run.blocks("assistant", "tool_use")
    assert tool_use["name"] == "Bash" and tool_use["input"]["command"] == "echo CCB_OA_TOOL_OK"
    (cli_result,) = run.blocks("user", "tool_result")
    assert str(cli_result["content"]).strip() == "CCB_OA_TOOL_OK", run.report()
    first, second = mock.requests("oa")
    assert first.body is not None and second.body is not None
    tool_messages = [m for m in second.body["messages"] if m.get("role") == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [tool_use["id"]]
    assert "CCB_OA_TOOL_OK" in json.dumps(tool_messages[0]["content"])
    calls = [m for m in second.body["messages"] if m.get("tool_calls")]
    assert calls and calls[-1]["tool_calls"][0]["id"] == tool_use["id"]
    assert len(mock.requests("bad")) >= 1


# --- an image read by a tool travels back in a tool_result (issue 15) ----------------------


def _png(path: Path) -> bytes:
    """A real 8x8 PNG (red), written to ``path``; Claude Code's Read returns it as an image."""
    width = height = 8
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    png += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return png


def _read_png_script(path: Path) -> Script:
    """The mock answers with a Read call for ``path``; its next answer is the default text."""
    return Script(
        reply="tool_use", tool_name="Read", tool_input=json.dumps({"file_path": str(path)})
    )


def _image_in(content: Any) -> dict[str, Any]:
    (image,) = [b for b in content if isinstance(b, dict) and b.get("type") == "image"]
    return image


async def _image_turn(claude_bin: str, b: Any, tmp_path: Path) -> tuple[CliRun, Path]:
    work = tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)
    picture = work / "pixel.png"
    _png(picture)
    run = await run_claude(
        claude_bin,
        b.url,
        "Look at pixel.png and tell me what you see.",
        tmp_path / "home",
        work,
        tools="Read",
    )
    return run, picture


async def test_an_image_read_by_a_tool_reaches_an_anthropic_provider_as_is(
    claude_versions, mock, balancer_factory, tmp_path
):
    mock.enqueue("good", _read_png_script(tmp_path / "work" / "pixel.png"))
    mock.configure("good", Script(text="CCB_IMAGE_OK a red square"))
    b = await balancer_factory(failing_first_config(mock))

    run, picture = await _image_turn(claude_versions, b, tmp_path)

    assert_succeeded(run, "CCB_IMAGE_OK a red square")
    (tool_use,) = run.blocks("assistant", "tool_use")
    assert tool_use["name"] == "Read" and tool_use["input"]["file_path"] == str(picture)
    _, second = mock.requests("good")
    assert second.body is not None
    (sent,) = _tool_results(second.body)
    assert sent["tool_use_id"] == tool_use["id"]
    image = _image_in(sent["content"])
    assert image["source"]["type"] == "base64"
    assert image["source"]["media_type"] == "image/png"
    assert base64.b64decode(image["source"]["data"]).startswith(b"\x89PNG")


async def test_an_image_read_by_a_tool_reaches_an_openai_provider_as_an_image_part(
    claude_versions, mock, balancer_factory, tmp_path
):
    """PROTOCOL.md c.1: a tool message cannot carry an image, so it keeps the result's text
    (Claude Code adds a system reminder next to the image) and the image follows as an
    ``image_url`` part of the next user message."""
    mock.enqueue("oa", _read_png_script(tmp_path / "work" / "pixel.png"))
    mock.configure("oa", Script(text="CCB_OA_IMAGE_OK a red square"))
    text = config_text(
        mock, ["bad", ("oa", "openai")], routes={"*": [("bad", "passthrough"), ("oa", "gpt-4o")]}
    )
    mock.configure("bad", Script(status=529, error_type="overloaded_error"))
    b = await balancer_factory(text)

    run, _ = await _image_turn(claude_versions, b, tmp_path)

    assert_succeeded(run, "CCB_OA_IMAGE_OK a red square")
    (tool_use,) = run.blocks("assistant", "tool_use")
    assert tool_use["name"] == "Read"
    _, second = mock.requests("oa")
    assert second.body is not None
    messages = second.body["messages"]
    (tool,) = [m for m in messages if m.get("role") == "tool"]
    assert tool["tool_call_id"] == tool_use["id"]
    assert isinstance(tool["content"], str) and tool["content"]
    after = messages[messages.index(tool) + 1]
    assert after["role"] == "user"
    (part,) = [p for p in after["content"] if p.get("type") == "image_url"]
    url = part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]).startswith(b"\x89PNG")


async def test_a_provider_that_cuts_every_answer_costs_claude_code_nothing(
    claude_bin, mock, balancer_factory, tmp_path
):
    """Mid-stream recovery with the real CLI (docs/recovery.md): ``cutter`` cuts every answer
    a few events in, ``good`` is healthy. The turn that calls a tool and the turn that
    answers with its output are both finished on ``good`` as the same message: no api_retry,
    no non-streaming re-send, and the full answer text."""
    turn = {"reply": "tool_then_text", "tool_command": "echo CCB_TOOL_OK"}
    mock.configure("cutter", Script(**turn, cut_after=5))  # inside the tool call, then the text
    mock.configure("good", Script(**turn))
    settings = (
        "sticky_provider_duration: 0\n"  # every turn starts at the cutter again
        "unhealthy_threshold: 100\n"
        "recovery: {hold_tool_input: true}\n"  # so a cut inside the tool call can be redone
    )
    b = await balancer_factory(config_text(mock, ["cutter", "good"], settings=settings))

    run = await run_claude(
        claude_bin, b.url, "Run the command you are given.", tmp_path / "home", tmp_path / "work"
    )

    result = assert_succeeded(run, "The tool returned: CCB_TOOL_OK")
    (tool_use,) = run.blocks("assistant", "tool_use")
    assert tool_use["input"]["command"] == "echo CCB_TOOL_OK"
    (cli_result,) = run.blocks("user", "tool_result")
    assert str(cli_result["content"]).strip() == "CCB_TOOL_OK", run.report()
    assert result.get("stop_reason") == "end_turn", run.report()
    # two turns, each cut once and continued once: no re-send of any kind reached a provider
    assert len(mock.requests("cutter")) == 2 and len(mock.requests("good")) == 2
    rows = b.runtime.recent.rows()
    assert [r["outcome"] for r in rows] == ["recovered", "recovered"], rows
