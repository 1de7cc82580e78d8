"""The benchmark's CI smoke: every scenario at a tiny size, checked for correctness only.

``ccbalancer bench --smoke`` starts a real mock and real balancers as child processes and
streams through them on 127.0.0.1, so this also proves the bench itself (its stamps, its
completeness accounting, its sharing check) still works. Timings are never asserted here
(STYLE.md: timing belongs to the benchmark, and CI machines are noisy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ccbalancer

SCENARIOS = {"streams100", "streams1000", "flatout", "nonstream", "shared"}


@pytest.fixture(scope="module")
def smoke(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    # the bench (and the processes it starts) must run the code under test, not whatever
    # another checkout installed
    source = str(Path(ccbalancer.__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])),
    }
    env.pop("PYTHONASYNCIODEBUG", None)  # conftest turns it on for in-process tests only
    proc = subprocess.run(
        [sys.executable, "-m", "ccbalancer", "bench", "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        env=env,
    )
    report = json.loads(Path(out).read_text()) if out.exists() else {}
    return proc, report


def test_smoke_exits_zero_with_every_scenario_complete(smoke):
    proc, report = smoke
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["complete"] is True
    assert set(report["scenarios"]) == SCENARIOS


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_no_event_is_lost_duplicated_or_reordered(smoke, name):
    """Direct and through the balancer: every stamped event exactly once, in order, and
    every stream (or non-streaming request) finished."""
    _, report = smoke
    scenario = report["scenarios"][name]
    assert scenario["complete"] is True
    for repeat in scenario["repeats"]:
        for run in ("direct", "balancer"):
            c = repeat[run]["completeness"]
            assert c["streams"] > 0
            assert c["finished"] == c["streams"], (name, run, c)
            assert (c["missing"], c["duplicated"], c["reordered"], c["unexpected"]) == (0, 0, 0, 0)
            assert not c["errors"], (name, run, c["errors"])


def test_every_stream_had_its_own_upstream_call_except_when_shared(smoke):
    """Nonces keep request sharing out of the comparison; the sharing scenario is the only
    one that may (and must) coalesce."""
    _, report = smoke
    for name, scenario in report["scenarios"].items():
        if name == "shared":
            continue
        for repeat in scenario["repeats"]:
            balancer = repeat["balancer"]
            assert balancer["upstream_calls"] == balancer["completeness"]["streams"], name


def test_identical_clients_share_one_upstream_call(smoke):
    _, report = smoke
    scenario = report["scenarios"]["shared"]
    clients = scenario["params"]["clients"]
    for repeat in scenario["repeats"]:
        balancer = repeat["balancer"]
        assert balancer["upstream_calls"] == 1
        assert balancer["shared_roles"] == {"leader": 1, "follower": clients - 1}
        assert repeat["direct"]["upstream_calls"] == clients  # the mock itself never shares


@pytest.mark.parametrize("name", ["streams100", "streams1000", "shared"])
def test_timeline_slices_account_for_every_stamped_event(smoke, name):
    """``--timeline`` reads these: half-second slices in order, covering every measured event,
    and the balancer's RSS samples over the run."""
    _, report = smoke
    for repeat in report["scenarios"][name]["repeats"]:
        for run in ("direct", "balancer"):
            slices = repeat[run]["timeline"]
            assert [s["t_s"] for s in slices] == sorted({s["t_s"] for s in slices})
            assert sum(s["events"] for s in slices) == repeat[run]["stamped_events"] > 0
        assert repeat["balancer"]["rss_mb_over_time"][-1][1] > 0
