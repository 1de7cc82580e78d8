"""What one simulated response does: the ``Script`` and the ways to change it.

A provider's behaviour is layered per request: a per-request directive in the prompt
(``<<mock {json}>>``) overrides the fields of the next enqueued one-shot script, which replaces
the provider's configured default. Field names and values arrive from Python keywords, from the
control API's JSON and from directives; all three go through ``apply_fields`` so a typo is an
error everywhere instead of a silently ignored knob.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Any

from ccbalancer.mock.content import parse_content, parse_pieces

REPLIES = ("text", "tool_use", "thinking_tool", "tool_then_text")
DROPS = (None, "message_stop", "message_delta")
LINE_ENDINGS = ("lf", "crlf", "cr")
DIRECTIVE = "<<mock"
_DECODER = json.JSONDecoder()  # stateless; raw_decode finds where the directive's JSON ends


@dataclass
class Script:
    """What one response does; every field is optional (see DESIGN.md section 2 ``mock``).

    Positions (``error_after``, ``stall_after``, ``cut_after``) count frames already sent,
    ``message_start`` (OpenAI: the role chunk) included; ``invalid_json_at`` is 1-based (the
    frame that would be sent right after ``error_after = invalid_json_at - 1``).

    ``pieces`` and ``content`` script exact answers (``content.py``); ``resume_repeat`` is how
    a continuation in ``resume`` mode starts (``continuation.py``). A continuation request is
    answered by the same Script as the request it continues, faults included.
    """

    reply: str = "text"
    text: str = "Hello from the ccbalancer mock."
    events: int | None = None
    delay: float = 0.0
    headers_delay: float = 0.0
    first_event_delay: float = 0.0
    status: int = 200
    retry_after: float | None = None
    error_type: str | None = None
    error_message: str = "mock error"
    error_after: int | None = None
    stall_after: int | None = None
    cut_after: int | None = None
    cut_mid_event: bool = False
    reset_before_headers: bool = False
    drop: str | None = None
    line_ending: str = "lf"
    comments: bool = False
    split_data: bool = False
    invalid_json_at: int | None = None
    body_json_error: bool = False
    html: bool = False
    stamp: bool = False
    input_tokens: int = 25
    cache_read: int = 0  # prompt tokens reported as read from the prompt cache
    tool_command: str = "echo CCB_TOOL_OK"
    tool_name: str = "Bash"  # the tool the tool_use replies call
    tool_input: str = ""  # its input as a JSON object; "" = Bash's {"command": tool_command}
    fail_rate: float = 0.0
    ping: bool = True
    act: bool = False  # tools offered + words asking for an action: use a tool (mock/act.py)
    pieces: str = ""  # JSON array of strings: the text reply's delta pieces exactly
    content: str = ""  # JSON array of content blocks to answer with, instead of reply/text
    resume_repeat: int = 3  # words of the delivered tail a resumed answer says again (0: none)
    headers: str = ""  # extra response headers as a JSON object of strings (rate limits...)


def _kinds() -> dict[str, tuple[type, bool]]:
    """(value type, nullable) per field, from the resolved annotations."""
    kinds = {}
    for name, hint in typing.get_type_hints(Script).items():
        args = typing.get_args(hint)  # (int, NoneType) for "int | None"; () for plain types
        base = next((arg for arg in args if arg is not type(None)), hint)
        kinds[name] = (base, type(None) in args)
    return kinds


_KINDS = _kinds()
_CHOICES: dict[str, tuple[str | None, ...]] = {
    "reply": REPLIES,
    "drop": DROPS,
    "line_ending": LINE_ENDINGS,
}


def _check(name: str, value: Any) -> Any:
    if name not in _KINDS:
        raise ValueError(f"unknown Script field {name!r}")
    kind, nullable = _KINDS[name]
    if value is None:
        if nullable:
            return None
        raise ValueError(f"Script.{name} cannot be null")
    # bool is tested apart: isinstance(True, int) holds, and events=True is surely a mistake
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        raise ValueError(f"Script.{name} must be {kind.__name__}, got {value!r}")
    choices = _CHOICES.get(name)
    if choices is not None and value not in choices:
        raise ValueError(f"Script.{name} must be one of {choices}, got {value!r}")
    if name == "tool_input" and value and not _json_object(value):
        raise ValueError(f"Script.tool_input must be a JSON object, got {value!r}")
    if name == "pieces" and value:
        parse_pieces(value)
    if name == "content" and value:
        parse_content(value)
    if name == "resume_repeat" and value < 0:
        raise ValueError(f"Script.resume_repeat must be 0 or more, got {value!r}")
    if name == "headers" and value and not _string_map(value):
        raise ValueError(f"Script.headers must be a JSON object of strings, got {value!r}")
    return value


def _json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _string_map(text: str) -> bool:
    return _json_object(text) and all(isinstance(v, str) for v in json.loads(text).values())


def extra_headers(script: Script) -> dict[str, str]:
    """``Script.headers`` as a dict (checked when the script was made)."""
    return dict(json.loads(script.headers)) if script.headers else {}


def apply_fields(base: Script, fields: dict[str, Any]) -> Script:
    """``base`` with ``fields`` replaced, each name and value checked. Raises ``ValueError``."""
    if not fields:
        return base
    checked = {name: _check(name, value) for name, value in fields.items()}
    return dataclasses.replace(base, **checked)


def script_from_json(value: Any) -> Script:
    """A Script from a JSON object of field values (control API). Raises ``ValueError``."""
    if not isinstance(value, dict):
        raise ValueError("a Script must be a JSON object of Script fields")
    return apply_fields(Script(), value)


def directive_fields(text: str, provider: str) -> dict[str, Any]:
    """The Script fields a ``<<mock {json}>>`` directive in ``text`` sets for ``provider``.

    ``{"providers": {"relay-a": {...}, "*": {...}}}`` scripts several providers from one
    prompt (the balancer forwards the same body to each candidate); top-level fields apply to
    every provider and the provider's own entry (else ``"*"``) is laid over them.
    Raises ``ValueError`` for a directive that is not a JSON object.
    """
    start = text.find(DIRECTIVE)
    if start < 0:
        return {}
    at = start + len(DIRECTIVE)
    while at < len(text) and text[at].isspace():
        at += 1
    try:
        # raw_decode rather than a regex: the JSON may nest objects and contain ">>" in strings
        value, end = _DECODER.raw_decode(text, at)
    except json.JSONDecodeError as exc:
        raise ValueError(f"mock directive is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not text.startswith(">>", end):
        raise ValueError("mock directive must be <<mock {json object}>>")
    providers = value.pop("providers", None)
    if providers is not None:
        if not isinstance(providers, dict):
            raise ValueError('mock directive "providers" must be an object')
        own = providers.get(provider, providers.get("*"))
        if own is not None:
            if not isinstance(own, dict):
                raise ValueError(f"mock directive for {provider!r} must be an object")
            value.update(own)
    return value
