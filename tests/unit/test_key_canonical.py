"""The coalescing key hashes the body in pieces: exactly the bytes ``orjson.dumps`` would
write for the whole body, refused exactly where the whole body could not be written, and with
the forwarded credential in the identity. Sans-IO."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccbalancer.errors import ClientError
from ccbalancer.sharing import key as keys
from ccbalancer.sharing.key import coalescing_key, require_serializable

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=6), inner, max_size=8)
    ),
    max_leaves=60,
)


def _pieces(value: dict[str, Any]) -> bytes:
    out: list[bytes] = []
    keys._feed(lambda data: out.append(bytes(data)), value, 1)
    return b"".join(out)


@settings(max_examples=100)
@given(st.dictionaries(st.text(max_size=8), JSON, max_size=8))
def test_the_pieces_are_the_whole_serialization(body: dict[str, Any]) -> None:
    assert _pieces(body) == orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def test_large_lists_and_messages_are_hashed_in_pieces_with_the_same_bytes() -> None:
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 300_000}] * 3}]
        * 4,
        "many": list(range(200_000)),
        "escaped": 'a"\\\n\x01😀é' * 40_000,  # a long string with escapes, split anywhere
    }
    written: list[int] = []
    keys._feed(lambda data: written.append(len(data)), body, 1)
    assert max(written) < 400_000  # never a copy of the whole (~4 MB) body at once
    assert _pieces(body) == orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize("depth", range(248, 262))
@pytest.mark.parametrize("where", ["top", "message", "block"])
def test_refused_exactly_where_the_whole_body_cannot_be_written(depth: int, where: str) -> None:
    inner = _nested(depth)
    body = {
        "top": {"x": inner},
        "message": {"messages": [inner]},
        "block": {"messages": [{"role": "user", "content": [inner]}]},
    }[where]
    try:
        orjson.dumps(body)
        writable = True
    except orjson.JSONEncodeError:
        writable = False
    if writable:
        require_serializable(body)
        coalescing_key("k", body, {})
    else:
        with pytest.raises(ClientError) as refused:
            require_serializable(body)
        assert refused.value.status == 400
        with pytest.raises(ClientError):
            coalescing_key("k", body, {})


def test_the_forwarded_credential_is_part_of_the_identity_and_only_hashed() -> None:
    body = {"model": "m", "messages": []}
    alone = coalescing_key("sk-balancer", body, {})
    assert coalescing_key("sk-balancer", body, {}, forwarded="") == alone
    one = coalescing_key("sk-balancer", body, {}, forwarded="token-a")
    other = coalescing_key("sk-balancer", body, {}, forwarded="token-b")
    assert len({alone, one, other}) == 3
    plain = hashlib.sha256()  # the key without a forwarded credential is unchanged
    plain.update(hashlib.sha256(b"sk-balancer").digest())
    plain.update(b"?\n")
    for name in ("anthropic-version", "anthropic-beta"):
        plain.update(name.encode() + b"=\n")
    plain.update(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
    assert alone == plain.hexdigest()
