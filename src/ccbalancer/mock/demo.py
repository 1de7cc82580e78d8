"""The simulated providers ``ccbalancer demo`` (and a bare ``ccbalancer mock``) start with.

One of each kind of upstream the balancer must handle: a healthy Anthropic provider that
streams slowly enough to watch, a flaky one that fails half its requests (a 529 or a stream
cut before content, alternately — both invisible to a client behind the balancer), and an
OpenAI-format one that the balancer has to translate.
"""

from __future__ import annotations

from ccbalancer.mock.script import Script

_TEXT = (
    "Hello from the ccbalancer demo. This reply is streamed word by word by the {name} "
    "provider, through the balancer, to you."
)

DEMO_PROVIDERS: dict[str, Script] = {
    "healthy": Script(text=_TEXT.format(name="healthy"), delay=0.03, first_event_delay=0.03),
    "flaky": Script(text=_TEXT.format(name="flaky"), delay=0.03, fail_rate=0.5),
    "openai": Script(text=_TEXT.format(name="openai"), delay=0.03),
}

# which wire format the balancer must use for each demo provider: the mock itself answers
# any name in both formats, the path decides (MockServer.anthropic_url / openai_url)
DEMO_KINDS: dict[str, str] = {"healthy": "anthropic", "flaky": "anthropic", "openai": "openai"}
