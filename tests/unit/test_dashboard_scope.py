"""Who sees every client's part of the dashboard (``proxy.auth.sees_everyone``): the rule the
socket tests cannot reach from 127.0.0.1 — a client key from another machine, with and without
an admin key configured."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from ccbalancer.config import parse_config
from ccbalancer.proxy.auth import sees_everyone

ALICE = "sk-alice-scope-00000001"
ADMIN = "sk-admin-scope-00000001"
PROVIDERS = """
providers:
  - {name: a, type: anthropic, base_url: "http://127.0.0.1:1", auth_value: k-000000}
model_routes:
  "*": [{provider: a}]
"""


def _request(key: str, peer: str):
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 50000) if name == "peername" else default
    )
    return make_mocked_request("GET", "/dashboard/data", {"x-api-key": key}, transport=transport)


def _runtime(clients: bool, admin: bool):
    text = PROVIDERS
    if clients:
        text += f"clients:\n  - {{name: alice, key: {ALICE}}}\n"
    if admin:
        text += f"settings:\n  admin_api_key: {ADMIN}\n"
    return SimpleNamespace(config=parse_config(text))


@pytest.mark.parametrize(
    ("clients", "admin", "key", "peer", "everyone"),
    [
        (False, False, "", "10.0.0.7", True),  # no team: one party sees it all
        (True, True, ADMIN, "10.0.0.7", True),  # the admin key, from anywhere
        (True, True, ALICE, "127.0.0.1", False),  # an admin key is set: a client is a client
        (True, False, ALICE, "127.0.0.1", True),  # no admin key: this machine, like /admin/
        (True, False, ALICE, "10.0.0.7", False),  # no admin key, another machine: own part
    ],
)
def test_who_sees_every_clients_part(clients, admin, key, peer, everyone):
    assert sees_everyone(_request(key, peer), _runtime(clients, admin)) is everyone
