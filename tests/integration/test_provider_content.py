"""What each provider can take, seen through the real balancer (issue 15, items 4-5, 9): a
request a candidate cannot take skips it, a request no candidate can take is a 400 naming
what and who, never a silent drop; and OpenAI-format answers show an input estimate early."""

from __future__ import annotations

from typing import Any

from ccbalancer.dialects.estimate import estimate_input_tokens
from tests.conftest import config_text, msg, read_events

PDF = {
    "type": "document",
    "title": "spec.pdf",
    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"},
}
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}


def _with_pdf(**extra: Any) -> dict[str, Any]:
    content = [PDF, {"type": "text", "text": "Summarise the spec."}]
    return msg(messages=[{"role": "user", "content": content}], **extra)


async def test_a_pdf_skips_the_openai_provider_for_one_that_takes_files(mock, balancer_factory):
    text = config_text(
        mock, [("oa", "openai"), "an"], routes={"*": [("oa", "gpt-4o"), ("an", "passthrough")]}
    )
    b = await balancer_factory(text)

    resp = await b.post(_with_pdf())
    events = await read_events(resp)

    assert resp.status == 200
    assert resp.headers["x-provider-used"] == "an"
    assert events[-1][0] == "message_stop"
    assert mock.requests("oa") == []  # never sent a request it would have answered blind
    (sent,) = mock.requests("an")
    assert sent.body is not None and sent.body["messages"][0]["content"][0] == PDF
    assert b.runtime.health.get("oa").failures == 0  # not the provider's fault
    assert b.runtime.recent.rows(1)[0]["tried"] == "an:ok"


async def test_an_openai_provider_that_takes_files_gets_the_pdf_as_a_file_part(
    mock, balancer_factory
):
    text = config_text(
        mock,
        [("oa", "openai")],
        routes={"*": [("oa", "gpt-4o")]},
        provider_extra={"oa": ", capabilities: {files: true}"},
    )
    b = await balancer_factory(text)

    resp = await b.post(_with_pdf())
    await resp.read()

    assert resp.status == 200
    (sent,) = mock.requests("oa")
    assert sent.body is not None
    assert sent.body["messages"][-1]["content"][0] == {
        "type": "file",
        "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBERi0xLjQK"},
    }


async def test_a_server_tool_no_provider_runs_is_a_400_naming_it_and_the_providers(
    mock, balancer_factory
):
    text = config_text(
        mock,
        [("oa1", "openai"), ("oa2", "openai")],
        routes={"*": [("oa1", "gpt-4o"), ("oa2", "gpt-4o-mini")]},
    )
    b = await balancer_factory(text)

    for stream in (True, False):
        resp = await b.post(msg("latest news?", stream=stream, tools=[WEB_SEARCH]))
        body = await resp.json()
        assert resp.status == 400
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
        message = body["error"]["message"]
        assert "tool web_search_20250305" in message
        assert "oa1 cannot take" in message and "oa2 cannot take" in message
    assert mock.requests("oa1") == [] and mock.requests("oa2") == []
    assert b.runtime.health.get("oa1").failures == 0
    assert b.runtime.health.get("oa2").failures == 0


async def test_an_anthropic_relay_without_a_server_tool_is_skipped_for_one_with_it(
    mock, balancer_factory
):
    text = config_text(
        mock,
        ["relay", "official"],
        provider_extra={"relay": ", capabilities: {server_tools: [web_fetch]}"},
    )
    b = await balancer_factory(text)

    resp = await b.post(msg("search it", tools=[WEB_SEARCH]))
    await resp.read()

    assert resp.headers["x-provider-used"] == "official"
    assert mock.requests("relay") == []


async def test_when_the_one_provider_that_could_take_it_rests_the_answer_is_503(
    mock, balancer_factory
):
    """A 400 would tell Claude Code the request itself is wrong; it is not, it only has to
    wait for the provider that can serve it."""
    text = config_text(
        mock, [("oa", "openai"), "an"], routes={"*": [("oa", "gpt-4o"), ("an", "passthrough")]}
    )
    b = await balancer_factory(text)
    b.runtime.health.get("an").open_elsewhere(b.runtime.clock(), 30, "test: cooling down")

    resp = await b.post(_with_pdf())
    body = await resp.json()

    assert resp.status == 503
    assert "oa: cannot take document" in body["error"]["message"]
    assert "retry-after" in resp.headers


async def test_message_start_shows_the_estimate_and_records_keep_the_real_count(
    mock, balancer_factory
):
    """Claude Code reads input_tokens from message_start for its context meter ("0%" before
    issue 15); records, costs and budgets must still use what the provider reported."""
    text = config_text(mock, [("oa", "openai")], routes={"*": [("oa", "gpt-4o")]})
    b = await balancer_factory(text)
    body = msg("How large is this context? " * 40)
    mock.configure("oa", input_tokens=25)

    events = await read_events(await b.post(body))

    start = events[0][1]["message"]["usage"]
    delta = next(payload for name, payload in events if name == "message_delta")["usage"]
    assert start["input_tokens"] == estimate_input_tokens(body) > 25
    assert delta["input_tokens"] == 25
    assert b.runtime.recent.rows(1)[0]["input_tokens"] == 25


async def test_an_anthropic_answer_keeps_the_provider_usage_in_message_start(
    mock, balancer_factory
):
    b = await balancer_factory(config_text(mock, ["an"]))
    mock.configure("an", input_tokens=4321)
    events = await read_events(await b.post(msg("hi")))
    assert events[0][1]["message"]["usage"]["input_tokens"] == 4321
    assert b.runtime.recent.rows(1)[0]["input_tokens"] == 4321
