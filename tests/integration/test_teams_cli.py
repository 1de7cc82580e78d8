"""The teams commands as a user runs them (real processes): ``keys new``, ``usage``, and what
``check`` says about clients and prices."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import yaml

from tests.conftest import config_text, msg
from tests.integration.test_cli import _run
from tests.integration.test_teams import ALICE, BOB, client_line, team


async def test_keys_new_prints_a_key_once_and_config_lines_that_accept_it(
    tmp_path, mock, balancer_factory
):
    code, out, _ = await _run("keys", "new", "carol")
    assert code == 0
    key = re.search(r"^    (ccb-[A-Za-z0-9_-]{43})$", out, re.M).group(1)
    assert out.count(key) == 2  # the key, and the export line for carol's shell
    lines = out[out.index("\nclients:\n") + 1 :]
    entry = yaml.safe_load(lines)["clients"][0]
    assert entry == {"name": "carol", "key_sha256": hashlib.sha256(key.encode()).hexdigest()}
    text = config_text(mock, ["a"]) + lines
    b = await balancer_factory(text)
    accepted = await b.post(msg(), {"x-api-key": key})
    assert accepted.status == 200
    await accepted.read()
    assert b.runtime.recent.rows()[0]["client"] == "carol"
    assert (await b.post(msg(), {"x-api-key": key[:-1] + "x"})).status == 401
    _, again, _ = await _run("keys", "new", "carol")
    assert key not in again  # a fresh key every time


async def test_keys_new_refuses_a_name_logs_could_not_show(tmp_path):
    code, out, err = await _run("keys", "new", "carol smith")
    assert code == 2 and not out
    assert "carol smith" in err and "letters, digits" in err


async def test_usage_sums_tokens_and_cost_per_client_model_and_session(
    tmp_path, mock, balancer_factory
):
    db = tmp_path / "h.sqlite3"
    clients = client_line("alice", ALICE) + client_line("bob", BOB)
    text = team(mock, clients).replace(
        "  history: {enabled: false}\n", f"  history: {{enabled: true, path: '{db}'}}\n"
    )
    b = await balancer_factory(text, history=True)
    session = {"x-claude-code-session-id": "sess-0001"}
    for i in range(3):
        await (await b.post(msg(f"a{i}", model="claude-haiku-4-5"), {"x-api-key": ALICE})).read()
    await (await b.post(msg("b", model="claude-opus-4-5"), {"x-api-key": BOB, **session})).read()
    costs = {r["request_id"]: r["cost_usd"] for r in b.runtime.recent.rows()}
    await b.stop()
    code, out, err = await _run("usage", "--db", str(db), "--json")
    assert code == 0, err
    report = json.loads(out)
    by_client = {row["client"]: row for row in report["rows"]}
    assert by_client["alice"]["requests"] == 3 and by_client["bob"]["requests"] == 1
    assert by_client["alice"]["fresh_tokens"] == 3 * 25
    assert report["total"]["usd"] == pytest.approx(sum(costs.values()))
    assert by_client["bob"]["usd"] == pytest.approx(25 * 5e-6 + 7 * 25e-6)  # Opus 4.5: $5, $25
    code, out, _ = await _run("usage", "--db", str(db), "--by", "session")
    assert code == 0
    assert re.search(r"^sess-0001\s+1\s", out, re.M)
    assert re.search(r"^alice\s+3\s", out, re.M)  # a session without an id is the client
    code, out, _ = await _run("usage", "--db", str(db), "--by", "model", "--since", "1h")
    assert re.search(r"^claude-haiku-4-5\s+3\s", out, re.M)
    assert "by model, 4 requests" in out


async def test_check_lists_clients_by_name_and_warns_of_routed_models_without_a_price(
    tmp_path, mock
):
    routes = {"glm-*": [("a", "glm-4.6")], "claude-haiku-4-5": [("a", "passthrough")]}
    clients = client_line("alice", ALICE, usd_per_day=5, models=["claude-*"])
    path = tmp_path / "config.yaml"
    path.write_text(team(mock, clients, routes=routes))
    code, out, err = await _run("check", "-c", str(path))
    assert code == 0, err
    assert re.search(r"alice\s+key\s+models: claude-\*; limits: usd_per_day 5", out)
    assert ALICE not in out + err
    assert "warning: no price for glm-4.6 at a (route glm-*)" in out
    assert "claude-haiku-4-5 at a" not in out  # built-in price
