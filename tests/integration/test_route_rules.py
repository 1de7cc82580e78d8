"""Route rules end to end: Claude Code's real request shapes reach the route their kind names,
and the request record says which kind and which rule chose it (issue 17)."""

from __future__ import annotations

import asyncio
import copy
import json
import sys
from pathlib import Path
from typing import Any

from ccbalancer.observe.logs import configure_logging
from tests.conftest import config_text, msg, read_events

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "claude_code"
TITLE = json.loads((SAMPLES / "2.1.330-title-request.json").read_text())
MAIN = json.loads((SAMPLES / "2.1.330-request1-skeleton.json").read_text())

RULES = """route_rules:
  - when: {kind: background}
    use: side
  - when: {kind: web_search}
    use: search
  - when: {kind: image}
    use: vision
  - when: {kind: deep_thinking, model: "claude-opus-*"}
    use: think
  - when: {kind: long_context}
    use: long
  - when: {input_tokens_over: 20000}
    use: big
"""
ROUTES: dict[str, list[str | tuple[str, str] | tuple[str, str, int]]] = {
    "claude-*": ["main"],
    "side": ["side"],
    "search": ["search"],
    "vision": ["vision"],
    "think": ["think"],
    "long": ["long"],
    "big": ["big"],
}


async def _balancer(mock, balancer_factory):
    names = list(ROUTES)[1:]
    text = config_text(mock, ["main", *names], routes=ROUTES) + RULES
    return await balancer_factory(text)


async def _served(b, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    resp = await b.post(body, {"x-claude-code-session-id": "cc-session-1"})
    events = await read_events(resp)
    assert resp.status == 200 and events[-1][0] == "message_stop", events[-1]
    row = b.runtime.recent.rows(1)[0]
    return resp.headers["x-provider-used"], row


async def test_claude_codes_title_request_goes_to_the_background_route_its_turns_do_not(
    mock, balancer_factory
):
    b = await _balancer(mock, balancer_factory)
    provider, row = await _served(b, TITLE)
    assert provider == "side"
    assert (row["kind"], row["rule"]) == ("background", "route_rules[0]")
    # the title request names the session's main model: only its shape sent it elsewhere
    (sent,) = mock.requests("side")
    assert sent.body is not None and sent.body["model"] == "claude-opus-5-5"
    provider, row = await _served(b, MAIN)
    assert provider == "main"
    assert (row["kind"], row["rule"]) == ("", "")  # medium effort, no rule: the model's route


async def test_each_kind_reaches_the_route_its_rule_names(mock, balancer_factory):
    b = await _balancer(mock, balancer_factory)
    search = copy.deepcopy(MAIN)
    search["tools"].append({"type": "web_search_20250305", "name": "web_search"})
    assert (await _served(b, search))[0] == "search"

    image = copy.deepcopy(MAIN)
    png = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    picture = {"type": "image", "source": png}
    image["messages"][0]["content"].append(picture)
    provider, row = await _served(b, image)
    assert (provider, row["rule"]) == ("vision", "route_rules[2]")
    assert "image" in row["kind"].split(",")

    deep = copy.deepcopy(MAIN)
    deep["messages"][1]["output_config"]["effort"] = "max"  # /effort max, per turn
    provider, row = await _served(b, deep)
    assert (provider, row["kind"], row["rule"]) == ("think", "deep_thinking", "route_rules[3]")
    deep["model"] = "claude-sonnet-4-6"  # the rule names opus models only
    assert (await _served(b, deep))[0] == "main"

    huge = msg("word " * 150_000, model="claude-sonnet-4-6")  # ~214K tokens by the estimate
    provider, row = await _served(b, huge)
    assert (provider, row["kind"], row["rule"]) == ("long", "long_context", "route_rules[4]")
    large = msg("word " * 20_000, model="claude-sonnet-4-6")  # ~29K tokens
    provider, row = await _served(b, large)
    assert (provider, row["rule"]) == ("big", "route_rules[5]")
    small = msg("hello", model="claude-sonnet-4-6")
    assert (await _served(b, small))[0] == "main"


async def test_the_log_line_names_the_kind_and_the_rule(tmp_path, mock, balancer_factory):
    log = tmp_path / "log.jsonl"
    handle = configure_logging("INFO", str(log), console=False)
    try:
        b = await _balancer(mock, balancer_factory)
        await _served(b, TITLE)
        await _served(b, msg("plain"))
    finally:
        handle.close()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    requests = [line for line in lines if line["event"] == "request"]
    assert requests[0]["kind"] == "background" and requests[0]["rule"] == "route_rules[0]"
    assert requests[0]["provider"] == "side"
    assert "kind" not in requests[1] and "rule" not in requests[1]  # plain: model routing


async def _check(path: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ccbalancer", "check", "-c", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


CHECKED = """providers:
  - {name: main, type: anthropic, base_url: "http://127.0.0.1:9"}
  - {name: cheap, type: openai, base_url: "http://127.0.0.1:9/v1"}
model_routes:
  "claude-*": [{provider: main}]
  side: [{provider: cheap, model: qwen3-coder}]
route_rules:
  - when: {kind: background}
    use: side
  - when: {kind: deep_thinking, model: "claude-opus-*"}
    use: %s
"""


async def test_check_prints_the_rules_and_where_each_kind_goes(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(CHECKED % "side")
    code, out, err = await _check(path)
    assert code == 0, err
    lines = [line.split() for line in out.splitlines()]
    assert ["route_rules[0]", "kind", "background", "->", "side"] in lines
    assert [
        "route_rules[1]",
        "kind",
        "deep_thinking,",
        "model",
        "claude-opus-*",
        "->",
        "side",
    ] in lines
    kinds = {line[0]: " ".join(line[2:]) for line in lines if len(line) > 2 and line[1] == "->"}
    assert kinds["background"] == "side (route_rules[0])"
    assert (
        kinds["deep_thinking"]
        == "side (route_rules[1], if model claude-opus-*); else the model's route"
    )
    assert kinds["web_search"] == "the model's route"


async def test_a_rule_using_an_unknown_route_is_a_config_error_naming_the_rule(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(CHECKED % "thinkers")
    code, _, err = await _check(path)
    assert code == 2
    assert "line 11: route_rules[1].use: unknown route 'thinkers'" in err
    assert "'claude-*', 'side'" in err  # the routes it could name
