"""Per-provider ``anthropic-beta`` filtering (issue 15, item 6).

Claude Code sends a long ``anthropic-beta`` list that depends on the model (CLAUDE_CODE.md
section 3). Anthropic itself answers an unknown name with 400 "Unsupported beta header", and so
do relays backed by Bedrock or Vertex (LiteLLM #20021, new-api #3041); the retired
``context-1m-2025-08-07`` now fails even on some direct routes (CLIProxyAPI #2866). A provider
can therefore drop names (``drop``) or keep only some (``allow``), both as glob lists, applied
to the header and to the ``anthropic_beta`` list some clients put in the body. Sans-IO.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BetaFilter:
    drop: tuple[str, ...] = ()
    allow: tuple[str, ...] | None = None  # None: every name not dropped

    @property
    def active(self) -> bool:
        return bool(self.drop) or self.allow is not None

    def keeps(self, name: str) -> bool:
        lowered = name.lower()
        if any(fnmatch.fnmatchcase(lowered, p.lower()) for p in self.drop):
            return False
        return self.allow is None or any(
            fnmatch.fnmatchcase(lowered, p.lower()) for p in self.allow
        )

    def header(self, value: str) -> str:
        """The filtered comma-separated header value ("" when nothing is left)."""
        names = (name.strip() for name in value.split(","))
        return ",".join(name for name in names if name and self.keeps(name))

    def names(self, values: list[object]) -> list[object]:
        """A body ``anthropic_beta`` list, filtered (non-strings are left for the API to judge)."""
        return [v for v in values if not isinstance(v, str) or self.keeps(v.strip())]


NO_BETA_FILTER = BetaFilter()
