"""Secrets and what clients may store (issue 14, items 2, 3 and 5), through real sockets.

A passthrough provider receives each user's own upstream token, so users behind one balancer
key must never be given each other's answers; a token the balancer forwards is masked in the
log like its own keys, even when it only appears in a request aiohttp could not parse; and a
client-chosen string cannot fill the log, the dashboard's ring or the history.
"""

from __future__ import annotations

import asyncio
import json

from ccbalancer.mock import Script
from ccbalancer.observe.logs import configure_logging
from tests.conftest import config_text, envelope_of, msg, raw_http

INBOUND = "sk-inbound-key-1"
SHARED = "x-ccbalancer-shared"


def _passthrough(mock, settings: str = "") -> str:
    auth = f"auth: {{enabled: true, api_key: {INBOUND}}}\n"
    return config_text(mock, ["p"], settings=auth + settings).replace(
        'auth_value: "sk-prov-p-secret"', 'auth_value: "passthrough"'
    )


async def _ask(b, token: str | None, text: str = "the same question"):
    headers = {"x-api-key": INBOUND}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return await b.session.post(b.url + "/v1/messages", json=msg(text), headers=headers)


async def test_users_with_different_upstream_tokens_never_share_live_or_cached_answers(
    mock, balancer_factory
):
    """Same balancer key, same body: a passthrough provider answers each token separately,
    while the call is live and afterwards from the cache; the same token still shares."""
    mock.configure("p", Script(first_event_delay=0.3))
    b = await balancer_factory(_passthrough(mock, "deduplication: {enabled: true}\n"))
    first, second = await asyncio.gather(_ask(b, "user-token-aaaa"), _ask(b, "user-token-bbbb"))
    await first.read(), await second.read()
    assert (first.headers[SHARED], second.headers[SHARED]) == ("leader", "leader")
    none = await _ask(b, None)  # no upstream token at all: not anyone else's answer either
    await none.read()
    assert none.headers[SHARED] == "leader"
    again = await _ask(b, "user-token-aaaa")
    await again.read()
    assert again.headers[SHARED] == "cache"  # the same user still shares
    seen = sorted(r.headers.get("x-api-key", "") for r in mock.requests("p"))
    assert seen == ["", "user-token-aaaa", "user-token-bbbb"]


async def test_a_user_with_a_bad_token_gets_the_upstream_refusal_not_a_cached_answer(
    mock, balancer_factory
):
    b = await balancer_factory(_passthrough(mock, "deduplication: {enabled: true}\n"))
    good = await _ask(b, "user-token-good")
    assert good.status == 200
    await good.read()
    mock.enqueue("p", Script(status=401, error_type="authentication_error"))
    bad = await _ask(b, "user-token-bad")
    assert bad.status == 401
    assert (await bad.json())["error"]["type"] == "authentication_error"
    assert [r.headers["x-api-key"] for r in mock.requests("p")] == [
        "user-token-good",
        "user-token-bad",
    ]


async def test_a_passthrough_token_never_reaches_the_log(tmp_path, mock, balancer_factory):
    """A bare-LF request line makes aiohttp's parser fail and quote the raw request, token
    and all, in its error; the answer is the envelope with a fixed reason, and the log gets
    one line without a traceback. A token the balancer forwarded is masked anywhere later."""
    log = tmp_path / "log.jsonl"
    handle = configure_logging("DEBUG", str(log), console=False)
    token = "user-upstream-token-9f8e7d6c"
    forwarded = "user-forwarded-token-1a2b3c4d"
    try:
        b = await balancer_factory(_passthrough(mock), redactor=handle.redactor)
        answer = await raw_http(
            b.url,
            b"POST /v1/messages HTTP/1.1\nhost: x\nx-api-key: " + INBOUND.encode() + b"\n"
            b"authorization: Bearer " + token.encode() + b"\ncontent-length: 0\n\n",
        )
        ok = await _ask(b, forwarded)
        await ok.read()
        b.runtime.log.warning("upstream_echo", detail=f"the upstream said {forwarded} is bad")
    finally:
        handle.close()
    assert answer.status == 400
    assert envelope_of(answer)["type"] == "invalid_request_error"
    assert token.encode() not in answer.body
    assert ok.status == 200 and mock.requests("p")[-1].headers["x-api-key"] == forwarded
    text = log.read_text()
    assert token not in text and forwarded not in text
    assert "Traceback" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["event"] for line in lines].count("bad_http_request") == 1
    assert any(line["event"] == "upstream_echo" and "***" in line["detail"] for line in lines)


async def test_a_model_name_past_256_characters_is_refused_and_never_stored(
    tmp_path, mock, balancer_factory
):
    log = tmp_path / "log.jsonl"
    handle = configure_logging("INFO", str(log), console=False)
    huge = "claude-" + "m" * 1_000_000
    try:
        b = await balancer_factory(config_text(mock, ["a"]), redactor=handle.redactor)
        resp = await b.post(msg(model=huge))
        error = (await resp.json())["error"]
        at_limit = await b.post(msg(model="claude-" + "n" * 249))  # 256: still a model name
        await at_limit.read()
    finally:
        handle.close()
    assert resp.status == 400 and error["type"] == "invalid_request_error"
    assert "256" in error["message"] and len(error["message"]) < 200
    assert at_limit.status == 200
    assert mock.requests("a")[-1].body["model"] == "claude-" + "n" * 249
    assert len(mock.requests("a")) == 1
    assert log.stat().st_size < 20_000  # the refused name is nowhere in the log
    rows = b.runtime.recent.rows()
    assert all(len(str(value)) <= 512 for row in rows for value in row.values())
