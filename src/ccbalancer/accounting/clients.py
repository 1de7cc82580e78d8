"""Who is asking: the configured clients, found by the key a request presents.

Each key is kept as its SHA-256 (a client may be configured with nothing else), and a
presented key is hashed once and compared with every known digest in constant time, with no
early exit, so the time taken tells nothing about which key matched or how much of one. The
keys of ``settings.auth.api_key`` belong to the client ``anonymous``. Only names leave this
module.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from dataclasses import dataclass

from ccbalancer.config.clients import ANONYMOUS, ClientConfig
from ccbalancer.config.schema import Config


def digest(key: str) -> bytes:
    """SHA-256 of a key as it arrived (bytes that were not UTF-8 are hashed as they came)."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    limits: ClientConfig | None = None  # None: no models restriction, no limits
    models: re.Pattern[str] | None = None  # the limits' model globs as one pattern

    def allows(self, model: str) -> bool:
        return self.models is None or self.models.match(model) is not None

    @classmethod
    def of(cls, config: ClientConfig) -> Client:
        globs = config.models
        if globs is None:
            return cls(config.name, config)
        # fnmatch.translate anchors each glob; one pattern matches them all in one call
        pattern = "|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs) or "(?!)"
        return cls(config.name, config, re.compile(pattern, re.IGNORECASE))

    @property
    def money_limited(self) -> bool:
        return self.limits is not None and self.limits.money_limited


NOBODY = Client(ANONYMOUS)  # every request when inbound auth is off


class ClientBook:
    """The clients of one config snapshot."""

    def __init__(self, config: Config) -> None:
        self.enabled = config.inbound_auth
        self.named = bool(config.clients)
        self.clients = {c.name: Client.of(c) for c in config.clients}
        known = [(digest(key), NOBODY) for key in config.settings.auth.keys]
        known += [
            (bytes.fromhex(c.key_sha256) if c.key_sha256 else digest(c.key), self.clients[c.name])
            for c in config.clients
        ]
        self._known = known

    def identify(self, presented: str) -> Client | None:
        """The client whose key ``presented`` is, or None."""
        if not presented:
            return None
        seen = digest(presented)
        found: Client | None = None
        for known, client in self._known:  # no early exit: see the module's docstring
            if hmac.compare_digest(seen, known):
                found = client
        return found

    @property
    def names(self) -> list[str]:
        """Every client name a request can carry (the label set of the client metrics)."""
        return [*self.clients, ANONYMOUS]
