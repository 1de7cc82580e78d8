"""Tool calls held until complete (``settings.recovery.hold_tool_input``), sans-IO.

A tool call's input cannot be continued halfway: a provider finishing the message would have
to produce the rest of someone else's JSON. With the setting on, each ``tool_use`` block goes
to the client only once its ``content_block_stop`` arrived, so a cut inside one leaves the
client without any of it and the continuation makes the whole call again. The price is that
tool arguments no longer stream (which is why it is off by default).
"""

from __future__ import annotations

from ccbalancer.sse.event import Event


class ToolHold:
    __slots__ = ("_held", "_index")

    def __init__(self) -> None:
        self._held: list[Event] = []
        self._index: int | None = None  # the tool_use block being held

    def feed(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for event in events:
            kind = event.name
            if self._index is not None:
                self._held.append(event)
                if kind == "content_block_stop" and event.json().get("index") == self._index:
                    out.extend(self._held)
                    self._held, self._index = [], None
            elif kind == "content_block_start" and _is_tool(event):
                self._index = event.json().get("index")
                self._held = [event]
            else:
                out.append(event)
        return out


def _is_tool(event: Event) -> bool:
    block = event.json().get("content_block")
    return isinstance(block, dict) and block.get("type") == "tool_use"
