"""What kind of request this is, read from its shape, never from its model name (issue 17).

Claude Code sends its side requests with the main model (CLAUDE_CODE.md section 4), so a
model name says nothing; the body's shape does:

* ``background``: a title or summary side request. No tools (absent or ``[]``) and no
  thinking, plus a structured-output ``output_config.format`` (2.1.330's title request: the
  JSON schema ``{title}``, ``tools: []``, no ``thinking``) or an explicit
  ``thinking: {"type": "disabled"}`` (2.1.197's). A plain request without tools and thinking
  is *not* background: nothing says it is a side request.
* ``deep_thinking``: thinking not disabled and a high effort (``output_config.effort`` high,
  xhigh or max; a later per-turn ``output_config`` on a ``system`` message overrides it), or a
  thinking budget of ``LARGE_BUDGET`` tokens or more.
* ``web_search``: a ``web_search_*`` server tool among the tools (what Claude Code's WebSearch
  sends).
* ``image``: an image anywhere in the messages (tool results included): once one is in the
  history, every later turn needs a provider that takes images.
* ``long_context``: more than ``LONG_CONTEXT`` tokens by the local estimate, i.e. too long for
  a standard 200K context window.

``Shape`` answers lazily and remembers: the first three cost a look at a few top-level fields;
``image`` walks every block and ``long_context`` needs the token estimate (about 0.4 ms for a
500 KB body), so those two are worked out only when a rule (or a rate-limit check) asks, and at
most once per request. It reads the body through the request that holds it, so it never keeps
a body the request has let go of (a relay call drops it at the commit); asked only after that,
it finds an empty body: no kinds, no tokens. Sans-IO.
"""

from __future__ import annotations

from typing import Any, Protocol

from ccbalancer.config.schema import REQUEST_KINDS, RequestKind
from ccbalancer.dialects.capabilities import request_needs
from ccbalancer.dialects.estimate import estimate_input_tokens

DEEP_EFFORTS = frozenset({"high", "xhigh", "max"})
LARGE_BUDGET = 16_000  # above Claude Code's old "think hard" (10K); its "ultrathink" is 31,999
LONG_CONTEXT = 200_000  # a standard context window


class Holder(Protocol):
    """What holds a request's body for as long as it is needed (``relay.Call``)."""

    @property
    def body(self) -> dict[str, Any]: ...


class _Held:
    __slots__ = ("body",)

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body


class Shape:
    """One request's kinds and token estimate, each worked out at most once."""

    __slots__ = ("_found", "_request", "_tokens")

    def __init__(self, request: Holder | dict[str, Any]) -> None:
        self._request = _Held(request) if isinstance(request, dict) else request
        self._found: dict[str, bool] = {}
        self._tokens: int | None = None

    @property
    def _body(self) -> dict[str, Any]:
        return self._request.body

    @property
    def input_tokens(self) -> int:
        """The local estimate of the prompt (``dialects.estimate``), computed once."""
        if self._tokens is None:
            self._tokens = estimate_input_tokens(self._body)
        return self._tokens

    def has(self, kind: RequestKind) -> bool:
        found = self._found.get(kind)
        if found is None:
            found = self._found[kind] = _TESTS[kind](self)
        return found

    def kinds(self) -> list[str]:
        """The kinds this request is known to be: the cheap ones always, ``image`` and
        ``long_context`` only if something already asked (finding out walks the body)."""
        for kind in _CHEAP:
            self.has(kind)
        return [kind for kind in REQUEST_KINDS if self._found.get(kind)]

    # -- the tests ---------------------------------------------------------------------------

    def _background(self) -> bool:
        body = self._body
        if body.get("tools") or _thinking_on(body):
            return False
        output = body.get("output_config")
        structured = isinstance(output, dict) and output.get("format") is not None
        thinking = body.get("thinking")
        disabled = isinstance(thinking, dict) and thinking.get("type") == "disabled"
        return structured or disabled

    def _deep_thinking(self) -> bool:
        body = self._body
        thinking = body.get("thinking")
        if isinstance(thinking, dict):
            if thinking.get("type") == "disabled":
                return False
            budget = thinking.get("budget_tokens")
            if isinstance(budget, int) and budget >= LARGE_BUDGET:
                return True
        return _effort(body) in DEEP_EFFORTS

    def _web_search(self) -> bool:
        tools = self._body.get("tools")
        return isinstance(tools, list) and any(
            isinstance(tool, dict) and str(tool.get("type", "")).startswith("web_search")
            for tool in tools
        )

    def _image(self) -> bool:
        return any(need.label == "image" for need in request_needs(self._body))

    def _long_context(self) -> bool:
        return self.input_tokens > LONG_CONTEXT


_TESTS = {
    "background": Shape._background,
    "deep_thinking": Shape._deep_thinking,
    "web_search": Shape._web_search,
    "image": Shape._image,
    "long_context": Shape._long_context,
}
_CHEAP: tuple[RequestKind, ...] = ("background", "deep_thinking", "web_search")


def _thinking_on(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled")


def _effort(body: dict[str, Any]) -> str | None:
    """The effort in force: the last per-turn ``output_config`` of a ``system`` message in
    ``messages`` (Claude Code 2.1.3xx's per-turn control), else the top-level one."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "system":
                output = message.get("output_config")
                if isinstance(output, dict) and isinstance(output.get("effort"), str):
                    return str(output["effort"]).lower()
    output = body.get("output_config")
    if isinstance(output, dict) and isinstance(output.get("effort"), str):
        return str(output["effort"]).lower()
    return None
