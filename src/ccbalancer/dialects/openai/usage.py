"""An OpenAI-compatible ``usage`` object -> Anthropic usage, wherever the server put the cache.

Anthropic counts cache reads and cache writes apart from ``input_tokens`` (so the three add up
to the prompt); OpenAI-style servers report the whole prompt in ``prompt_tokens`` and the cached
part somewhere inside it. Where, depends on the server:

* ``prompt_tokens_details.cached_tokens`` — OpenAI, Azure, xAI, Qwen/DashScope, OpenRouter, vLLM
* ``prompt_cache_hit_tokens`` / ``prompt_cache_miss_tokens`` — DeepSeek
* ``cached_tokens`` at the top of ``usage`` — Moonshot (Kimi)
* ``prompt_tokens_details.cache_write_tokens`` — OpenRouter's cache writes
* ``cache_read_input_tokens`` / ``cache_creation_input_tokens`` — relays (LiteLLM and the
  like) that pass Anthropic's own counts through next to ``prompt_tokens``

One function serves the streaming and the whole-answer paths (both go through the stream
translator). Sans-IO.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def anthropic_usage(usage: Mapping[str, Any]) -> dict[str, int]:
    """``input_tokens``, ``cache_creation_input_tokens``, ``cache_read_input_tokens`` and
    ``output_tokens`` for an OpenAI-style ``usage`` (absent or odd fields count as 0)."""
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, Mapping):
        details = {}
    read = _first(
        details.get("cached_tokens"),
        usage.get("prompt_cache_hit_tokens"),
        usage.get("cached_tokens"),
        usage.get("cache_read_input_tokens"),
    )
    written = _first(usage.get("cache_creation_input_tokens"), details.get("cache_write_tokens"))
    prompt = count(usage.get("prompt_tokens"))
    if not prompt and "prompt_cache_miss_tokens" in usage:
        prompt = count(usage.get("prompt_cache_miss_tokens")) + read
    cached = read + written
    # A relay that already reports prompt_tokens the Anthropic way (without the cache) would
    # otherwise come out as 0 fresh input: a prompt smaller than its own cache says so.
    fresh = prompt - cached if prompt >= cached else prompt
    return {
        "input_tokens": fresh,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "output_tokens": count(usage.get("completion_tokens")),
    }


def count(value: object) -> int:
    """A token count: a positive int, else 0 (servers send null, floats-as-strings, bools)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _first(*values: object) -> int:
    return next((n for n in map(count, values) if n), 0)
