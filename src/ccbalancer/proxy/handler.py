"""``POST /v1/messages``: admit, key, then replay, join or lead (DESIGN.md section 5).

Admission parses the body once (``proxy.body``: bounded in size, time and memory) and refuses
what cannot be served with a 4xx in the Anthropic envelope. The answer is produced by a
hub-owned call (``relay``) that this request may only be one subscriber of; this handler is that
subscriber's writer and its record keeper. The body's share of the memory budget goes back as
soon as nothing holds the body: at once for a follower or a cache hit, at the commit or the end
of the call for a leader.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from ccbalancer.dialects.session import session_key
from ccbalancer.errors import ClientError
from ccbalancer.observe.record import RequestRecord
from ccbalancer.proxy import clients, respond, writer
from ccbalancer.proxy.auth import bearer, presented_key
from ccbalancer.proxy.body import check_headers, read_json_body
from ccbalancer.relay.call import Call
from ccbalancer.runtime import RUNTIME, Runtime
from ccbalancer.sharing.broadcast import Broadcast, Lagged
from ccbalancer.sharing.hub import Producer
from ccbalancer.sharing.key import coalescing_key

MAX_MODEL_CHARS = 256  # longer is no model name: refused before it is logged or stored


def passthrough_credential(headers: dict[str, str], own_keys: tuple[str, ...]) -> str:
    """The credential a ``passthrough`` provider receives: what the client presented, except
    the balancer's own inbound or admin keys, which never leave the balancer. A client that
    authenticates to the balancer with ``x-api-key`` can carry its upstream token as Bearer."""
    for candidate in (headers.get("x-api-key", ""), bearer(headers)):
        if candidate and candidate not in own_keys:
            return candidate
    return ""


def admit(body: dict[str, Any]) -> tuple[str, bool, str | None]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ClientError(400, "model: field required (a non-empty string)")
    if len(model) > MAX_MODEL_CHARS:
        raise ClientError(400, f"model: at most {MAX_MODEL_CHARS} characters")
    if not isinstance(body.get("messages"), list):
        raise ClientError(400, "messages: field required (a list)")
    stream = body.get("stream") is True
    forced = body.get("provider")
    if forced is not None and (not isinstance(forced, str) or len(forced) > MAX_MODEL_CHARS):
        raise ClientError(400, "provider: must be a provider name")
    return model, stream, forced


def _releasing(producer: Producer, call: Call) -> Producer:
    """The call lets go of the body when it ends, whether or not it committed."""

    async def produce(broadcast: Broadcast) -> None:
        try:
            await producer(broadcast)
        finally:
            call.release(ended=True)

    return produce


async def messages(request: web.Request) -> web.StreamResponse:
    runtime: Runtime = request.app[RUNTIME]
    config = runtime.config  # this request's snapshot, whatever reloads happen meanwhile
    settings = config.settings
    started = time.time()
    t0 = time.perf_counter()
    request_id = runtime.request_id()
    record = RequestRecord(request_id=request_id, model="", started=started)
    dedup = settings.deduplication
    lease = runtime.bodies.lease()
    try:
        check_headers(request)
        body, raw = await read_json_body(request, settings, lease)
        model, stream, forced = admit(body)
        ticket = await clients.gate(request, runtime, record, model, body, forced)
        headers = {k.lower(): v for k, v in request.headers.items()}
        credential = presented_key(headers)
        own_keys = settings.auth.keys + settings.admin_keys + ticket.own_keys
        forwarded = passthrough_credential(headers, own_keys) if config.passthrough else ""
        # computed even with sharing off: it is also the check that the body can be
        # serialized for the upstream at all (orjson's depth limit)
        key: str | None = coalescing_key(
            credential,
            body,
            headers,
            dedup.include_max_tokens_in_signature,
            request.query_string,
            forwarded,
        )
    except ClientError as error:
        lease.release()
        record.status, record.outcome, record.error = error.status, "client_error", error.message
        record.duration = time.perf_counter() - t0
        runtime.finished(record)
        return respond.client_error_response(error)
    except BaseException:
        lease.release()
        raise
    if not dedup.enabled:
        key = None
    if forwarded:  # a token the balancer may pass on is masked in the log like its own keys
        runtime.redactor.forward(forwarded)
    record.model, record.stream = model, stream
    session = session_key(headers, body, credential)  # stickiness and cache warmth (issue 17)
    hub = runtime.hub
    found = hub.find(key)
    if found is not None:
        broadcast, role = found
        lease.release()  # this request's body is dropped below: the answer exists
    else:
        call = Call(
            config=config,
            body=body,
            model=model,
            query=request.query_string,
            headers=headers,
            credential=passthrough_credential(headers, own_keys),
            session=session,
            forced=forced,
            request_id=request_id,
            raw=raw,
            on_release=lease.keep,
        )
        producer = _releasing(runtime.producer(call, key, ticket.client), call)
        broadcast = hub.lead(key, dedup.max_stream_bytes, producer, f"upstream:{request_id}")
        role = "leader" if dedup.enabled else "none"
    # The body and headers live on in the call only until an attempt commits; this frame lasts
    # as long as the stream, and a Claude Code request is often hundreds of KB.
    del body, headers, raw
    record.role = role
    sub_id = hub.subscribe(broadcast)
    runtime.metrics.subscriber_added()
    runtime.inflight.add(record, broadcast)  # until runtime.finished(record)
    try:
        if stream:
            await writer.wait_ready(broadcast)
        else:
            # a non-streaming client follows from the first event, so the producer hands it
            # each event as it commits and publishes (nothing is parsed again from the log)
            accumulator = await writer.accumulate(broadcast)
        if broadcast.outcome.remote:  # another instance made the call (sharing through Redis)
            role = record.role = "follower"
        extra = {"x-ccbalancer-request-id": request_id}
        if dedup.enabled:
            extra["x-ccbalancer-shared"] = role
        if broadcast.head is None:
            failure = broadcast.failure
            assert failure is not None
            if failure.provider:
                extra["x-provider-used"] = failure.provider
            record.status, record.outcome, record.error = failure.status, "error", failure.message
            return respond.failure_response(failure, extra)
        head = broadcast.head
        out_headers = dict(head.headers)
        out_headers.pop("retry-after", None)
        out_headers.update(extra)
        out_headers["x-provider-used"] = head.provider
        record.provider = head.provider
        if stream:
            out_headers["cache-control"] = "no-cache"
            trace = runtime.event_tracer(request_id, sub_id)
            delivery = writer.Delivery()
            try:
                response = await writer.stream_to(
                    request,
                    broadcast,
                    out_headers,
                    settings.client_write_timeout,
                    runtime.metrics.event_forwarded,
                    trace,
                    delivery,
                )
            finally:  # also when the client left: the record says what it was given
                record.events, record.bytes = delivery.events, delivery.bytes
                if delivery.prepared is not None:
                    record.status, record.ttfb = 200, delivery.prepared - t0
            failure = broadcast.failure
            if failure is not None:
                record.outcome, record.error = "mid_stream_error", failure.message
            elif delivery.lost:
                record.outcome, record.error = "cancelled", f"client {delivery.lost}"
            return response
        failure = broadcast.failure
        if failure is not None:
            record.status, record.outcome, record.error = (
                failure.status,
                "mid_stream_error",
                failure.message,
            )
            return respond.failure_response(failure, extra | {"x-provider-used": head.provider})
        record.status = 200
        record.events = accumulator.events
        record.ttfb = time.perf_counter() - t0
        return writer.message_response(accumulator, out_headers)
    except Lagged:
        record.status, record.outcome, record.error = 500, "error", "client fell behind the stream"
        return respond.error_response(500, "api_error", "response too large to replay; retry")
    except asyncio.CancelledError:  # the client disconnected (handler cancellation)
        record.outcome, record.error = "cancelled", "client disconnected"
        raise
    except Exception:
        record.status, record.outcome, record.error = 500, "error", "internal error"
        raise
    finally:
        hub.unsubscribe(broadcast)
        runtime.metrics.subscriber_removed()
        _fill(record, broadcast, t0)
        runtime.finished(record)


def _fill(record: RequestRecord, broadcast: Broadcast, t0: float) -> None:
    record.duration = time.perf_counter() - t0
    outcome = broadcast.outcome
    if record.role in ("leader", "none"):
        record.attempts = list(outcome.attempts)
        record.ttfc = outcome.ttfc
        record.gaps, record.gap_p50, record.gap_max = broadcast.gaps()
    record.provider = record.provider or outcome.provider
    if outcome.recovered and record.outcome == "ok":
        record.outcome = "recovered"
    elif outcome.not_recovered and record.outcome == "mid_stream_error":
        record.error += f" (not recovered: {outcome.not_recovered})"
    usage = outcome.usage
    record.input_tokens = usage.total_input
    record.output_tokens = usage.output_tokens
    record.cache_read_tokens = usage.cache_read_input_tokens
    record.cache_write_tokens = max(usage.cache_creation_input_tokens, usage.cache_creation_1h)
    record.cache_write_1h_tokens = usage.cache_creation_1h
    record.stop_reason = outcome.stop_reason
    record.kind, record.rule = outcome.kind, outcome.rule
