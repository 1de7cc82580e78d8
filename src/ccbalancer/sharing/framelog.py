"""The frames of one answer, stored compactly and returned byte for byte.

A stream's frames are kept for as long as it runs and then for the cache's TTL, so what one
costs matters: as separate ``bytes`` objects a 150-byte delta frame took ~200 bytes. Here the
frames lie back to back in one ``bytearray``, and a frame that starts like an earlier one is
stored without that start: content deltas repeat a ~100-byte envelope
(``event: content_block_delta`` … ``"text":"``) around a few bytes of text, so each keeps only
its text, its tail and a one-byte template number (~50 bytes a delta, offsets included).
Sans-IO; ``frame(i)`` is exactly the bytes given to ``append``.
"""

from __future__ import annotations

import operator
from array import array

# What a stored frame costs beyond its stored bytes: its end offset, template number and
# receive time. Byte caps on logs and the cache count it.
FRAME_OVERHEAD = 9

_MAX_TEMPLATES = 16  # per log; a stream has one per content block kind, in practice
_DELTA = b'"delta":{"type":"'


def _template(raw: bytes) -> bytes:
    """The envelope of a delta frame, up to where its value begins (``…"text":"``), or b''."""
    at = raw.find(_DELTA)
    if at < 0:
        return b""
    cut = raw.find(b'":"', at + len(_DELTA))  # the first key after the delta's type
    return raw[: cut + 3] if cut > 0 else b""


class FrameLog:
    __slots__ = (
        "_data", "_ends", "_epoch", "_hot", "_hot_tag", "_received", "_tags", "_templates", "base",
        "end", "last", "last_received",
    )  # fmt: skip

    def __init__(self) -> None:
        self._data = bytearray()  # each retained frame's stored bytes, back to back
        self._ends = array("I")  # where each retained frame's stored bytes end in _data
        self._tags = array("B")  # 0: stored whole; n: _templates[n - 1] + stored bytes
        # when each frame arrived: perf_counter() seconds after _epoch (the first arrival), in
        # float32 (off by < 4 us in the first minute, < 0.25 ms after an hour: enough for the
        # forward-latency metric of a catch-up write); -1 for synthesised frames
        self._received = array("f")
        self._epoch = 0.0
        self._templates: list[bytes] = []
        self._hot = b""  # the template the newest frame used: the next one likely will
        self._hot_tag = 0  # its number (0: none yet)
        self.base = 0  # absolute index of the oldest retained frame
        self.end = 0  # absolute index one past the newest frame
        self.last = b""  # the newest frame, whole: what a caught-up reader writes
        self.last_received = 0.0  # its arrival, exactly

    def __len__(self) -> int:
        """Frames retained."""
        return self.end - self.base

    def append(self, raw: bytes, received: float) -> int:
        """Keep one frame; returns what it costs (stored bytes plus ``FRAME_OVERHEAD``)."""
        tag, hot = self._hot_tag, self._hot
        if tag and raw.startswith(hot):
            rest = raw[len(hot) :]
        else:
            tag, rest = self._match(raw)
        data = self._data
        data += rest
        self._ends.append(len(data))
        self._tags.append(tag)
        if received:
            if not self._epoch:
                self._epoch = received
            self._received.append(received - self._epoch)
        else:
            self._received.append(-1.0)
        self.last, self.last_received = raw, received
        self.end += 1
        return len(rest) + FRAME_OVERHEAD

    def _match(self, raw: bytes) -> tuple[int, bytes]:
        for index, template in enumerate(self._templates):
            if raw.startswith(template):
                number = index + 1
                break
        else:
            template = _template(raw)
            if not template or len(self._templates) >= _MAX_TEMPLATES:
                return 0, raw
            self._templates.append(template)
            number = len(self._templates)
        self._hot, self._hot_tag = template, number
        return number, raw[len(template) :]

    def frame(self, index: int) -> bytes:
        """Frame ``index`` (absolute, retained), exactly as appended."""
        offset = index - self.base
        ends = self._ends
        stored = self._data[ends[offset - 1] if offset else 0 : ends[offset]]
        tag = self._tags[offset]
        return self._templates[tag - 1] + stored if tag else bytes(stored)

    def size(self, index: int) -> int:
        """What frame ``index`` costs, as ``append`` counted it."""
        offset = index - self.base
        ends = self._ends
        return ends[offset] - (ends[offset - 1] if offset else 0) + FRAME_OVERHEAD

    def received(self, index: int) -> float:
        """When frame ``index`` arrived (perf_counter()), or 0.0 for a synthesised or dropped
        frame."""
        if index == self.end - 1:
            return self.last_received
        offset = index - self.base
        if not 0 <= offset < len(self._received):
            return 0.0
        since = self._received[offset]
        return self._epoch + since if since >= 0 else 0.0

    def gaps(self) -> tuple[int, float | None, float | None]:
        """The gaps between consecutive frames' arrivals (synthesised frames left out) among
        those retained: how many, their median and the longest, in seconds. Computed once per
        answer, from the receive times kept anyway, so the per-event path pays nothing."""
        times = [t for t in self._received if t >= 0]
        if len(times) < 2:
            return 0, None, None
        spans = sorted(map(operator.sub, times[1:], times[:-1]))
        return len(spans), spans[len(spans) // 2], spans[-1]

    def drop_oldest(self, count: int) -> None:
        """Forget the ``count`` oldest retained frames."""
        if count <= 0:
            return
        cut = self._ends[count - 1]
        del self._data[:cut]
        self._ends = array("I", [end - cut for end in self._ends[count:]])
        del self._tags[:count]
        del self._received[:count]
        self.base += count
