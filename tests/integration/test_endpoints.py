"""The small endpoints, inbound auth and admission of bad requests."""

from __future__ import annotations

import orjson
import pytest

from ccbalancer.mock import Script
from tests.conftest import config_text, msg

AUTH = """auth: {enabled: true, api_key: [sk-inbound-one, sk-inbound-two], exempt_paths: [/health]}
admin_api_key: sk-admin-key
"""


async def test_head_and_get_root_answer_200_without_credentials(mock, balancer_factory):
    b = await balancer_factory(config_text(mock, ["a"], settings=AUTH))
    for method in ("HEAD", "GET"):
        resp = await b.session.request(method, b.url + "/")
        assert resp.status == 200


async def test_health_reflects_whether_any_provider_can_take_traffic(mock, balancer_factory):
    settings = "unhealthy_threshold: 1\nfailure_cooldown: 30\n"
    b = await balancer_factory(config_text(mock, ["a"], settings=settings), manual_clock=True)
    resp = await b.session.get(b.url + "/health")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"
    mock.enqueue("a", Script(status=503))
    await (await b.post(msg())).read()
    resp = await b.session.get(b.url + "/health")
    assert resp.status == 503
    b.clock.now += 31  # half-open: one request may probe it again
    assert (await b.session.get(b.url + "/health")).status == 200


async def test_providers_shows_state_and_never_secrets(mock, balancer_factory):
    extra = {"a": ', proxy: "http://user:proxy-pass-123@127.0.0.1:9"'}
    settings = "unhealthy_threshold: 1\nfailure_cooldown: 30\n"
    b = await balancer_factory(
        config_text(mock, ["a", "b"], settings=settings, provider_extra=extra), manual_clock=True
    )
    mock.configure("b", Script())
    # a's proxy is unreachable: it fails over to b and a starts cooling down
    await (await b.post(msg())).read()
    resp = await b.session.get(b.url + "/providers")
    text = await resp.text()
    assert "sk-prov-" not in text and "proxy-pass-123" not in text and "127.0.0.1:9" not in text
    view = {p["name"]: p for p in (await resp.json())["providers"]}
    assert view["a"]["state"] == "cooling_down"
    assert 0 < view["a"]["cooldown_remaining_s"] <= 30
    assert view["a"]["failure_count"] == 1
    assert view["b"]["state"] == "healthy"
    assert view["b"]["in_flight"] == 0
    assert view["b"]["type"] == "anthropic"


async def test_models_lists_exact_routes_and_known_models_for_globs(mock, balancer_factory):
    b = await balancer_factory(
        config_text(mock, ["a"], routes={"my-model": ["a"], "*haiku*": ["a"]})
    )
    data = (await (await b.session.get(b.url + "/v1/models")).json())["data"]
    ids = [m["id"] for m in data]
    assert "my-model" in ids and "claude-haiku-4-5" in ids
    assert all(m["type"] == "model" for m in data)


async def test_count_tokens_is_forwarded_to_an_anthropic_provider(mock, balancer_factory):
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.session.post(
        b.url + "/v1/messages/count_tokens",
        json={"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert resp.status == 200
    assert "x-ccbalancer-estimated" not in resp.headers
    assert resp.headers["x-provider-used"] == "a"
    assert isinstance((await resp.json())["input_tokens"], int)
    assert mock.requests("a")[-1].path.endswith("/v1/messages/count_tokens")


async def test_count_tokens_falls_back_to_a_marked_local_estimate(mock, balancer_factory):
    b = await balancer_factory(config_text(mock, [("o", "openai")]))
    body = {
        "model": "claude-x",
        "system": "be brief",
        "messages": [{"role": "user", "content": "word " * 400}],
    }
    resp = await b.session.post(b.url + "/v1/messages/count_tokens", json=body)
    assert resp.status == 200
    assert resp.headers["x-ccbalancer-estimated"] == "true"
    tokens = (await resp.json())["input_tokens"]
    assert 300 < tokens < 1200
    assert mock.requests("o") == []  # no network for the estimate


@pytest.mark.parametrize(
    "headers",
    [{"x-api-key": "sk-inbound-one"}, {"authorization": "Bearer sk-inbound-two"}],
    ids=["x-api-key", "bearer"],
)
async def test_inbound_auth_accepts_configured_keys(headers, mock, balancer_factory):
    b = await balancer_factory(config_text(mock, ["a"], settings=AUTH))
    resp = await b.session.post(b.url + "/v1/messages", json=msg(), headers=headers)
    assert resp.status == 200
    await resp.read()


@pytest.mark.parametrize(
    "headers", [{}, {"x-api-key": "sk-wrong"}, {"authorization": "Bearer nope"}]
)
async def test_inbound_auth_rejects_with_anthropic_envelope(headers, mock, balancer_factory):
    b = await balancer_factory(config_text(mock, ["a"], settings=AUTH))
    resp = await b.session.post(b.url + "/v1/messages", json=msg(), headers=headers)
    assert resp.status == 401
    assert (await resp.json())["error"]["type"] == "authentication_error"
    assert (await b.session.get(b.url + "/health")).status == 200  # exempt path
    assert (await b.session.get(b.url + "/providers")).status == 401
    assert mock.requests("a") == []


async def test_admin_endpoint_needs_the_admin_key(mock, balancer_factory):
    b = await balancer_factory(config_text(mock, ["a"], settings=AUTH))
    resp = await b.session.post(
        b.url + "/providers/reload", headers={"x-api-key": "sk-inbound-one"}
    )
    assert resp.status == 401
    resp = await b.session.post(b.url + "/providers/reload", headers={"x-api-key": "sk-admin-key"})
    assert resp.status == 422  # authorised; no config file behind this balancer


BAD_BODIES = {
    "invalid_json": (b'{"model": "x", "messages": [', 400),
    "not_an_object": (b'["model"]', 400),
    "missing_model": (b'{"messages": []}', 400),
    "model_not_string": (b'{"model": 5, "messages": []}', 400),
    "missing_messages": (b'{"model": "claude-x"}', 400),
    "empty": (b"", 400),
    "invalid_utf8": (b'{"model": "\xff\xfe", "messages": []}', 400),
    "lone_surrogate": (
        b'{"model": "claude-x", "messages": [{"role": "user", "content": "\\ud800"}]}',
        400,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
async def test_bad_request_bodies_get_a_400_envelope_and_never_reach_upstream(
    case, mock, balancer_factory
):
    raw, status = BAD_BODIES[case]
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.session.post(
        b.url + "/v1/messages", data=raw, headers={"content-type": "application/json"}
    )
    assert resp.status == status
    body = await resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert mock.requests("a") == []


async def test_oversized_body_is_413(mock, balancer_factory):
    b = await balancer_factory(config_text(mock, ["a"], settings="max_body_bytes: 1000\n"))
    resp = await b.post(msg("x" * 5000))
    assert resp.status == 413
    assert (await resp.json())["error"]["type"] == "request_too_large"


async def test_unknown_path_and_method_answer_in_the_envelope(mock, balancer_factory):
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.session.get(b.url + "/v1/nothing-here")
    assert resp.status == 404
    assert (await resp.json())["error"]["type"] == "not_found_error"
    resp = await b.session.get(b.url + "/v1/messages")
    assert resp.status == 405
    assert (await resp.json())["type"] == "error"


async def test_unknown_fields_and_block_types_pass_through_untouched(mock, balancer_factory):
    b = await balancer_factory(config_text(mock, ["a"]))
    body = msg(
        context_management={"edits": [{"type": "clear_thinking_20251015"}]},
        future_field={"x": [1, 2.5]},
    )
    body["messages"][0]["content"] = [
        {"type": "new_block_kind", "payload": "ok"},
        {"type": "text", "text": "hi"},
    ]
    await (await b.post(body)).read()
    seen = mock.requests("a")[-1].body
    assert seen["future_field"] == {"x": [1, 2.5]}
    assert seen["context_management"] == body["context_management"]
    assert seen["messages"][0]["content"][0] == {"type": "new_block_kind", "payload": "ok"}
    assert orjson.loads(mock.requests("a")[-1].raw)["stream"] is True
