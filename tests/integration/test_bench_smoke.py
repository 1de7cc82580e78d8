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

import psutil
import pytest

import ccbalancer

SCENARIOS = {"streams100", "streams1000", "flatout", "nonstream", "shared", "bigbody"}


def run_bench(
    args: list[str], out: Path, timeout: float = 110, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict]:
    """``ccbalancer bench ARGS --json OUT`` as a subprocess; its result and the JSON ({} if
    none was written)."""
    # the bench (and the processes it starts) must run the code under test, not whatever
    # another checkout installed
    source = str(Path(ccbalancer.__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])),
        **(extra_env or {}),
    }
    env.pop("PYTHONASYNCIODEBUG", None)  # conftest turns it on for in-process tests only
    proc = subprocess.run(
        [sys.executable, "-m", "ccbalancer", "bench", *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    report = json.loads(out.read_text()) if out.exists() else {}
    return proc, report


@pytest.fixture(scope="module")
def smoke(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict]:
    return run_bench(["--smoke"], tmp_path_factory.mktemp("bench") / "smoke.json")


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


# -- --variant and --reference nginx ------------------------------------------------------------

VARIANT_KEY = "bench-variant-key-7f3a"  # a client key: must never show up in the report
NGINX = Path("/usr/sbin/nginx")
PROVIDERS = (
    "providers: [{name: bench, type: anthropic, base_url: '${BENCH_MOCK_URL}/bench',"
    " auth_value: bench-key}]"
)


@pytest.fixture(scope="module")
def variants(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Two variants beside the plain balancer on the sharing scenario: one whose merged
    config turns request sharing off (visible in the mock's call count) and restates the
    provider list with the mock's URL from ``${BENCH_MOCK_URL}`` (without it the balancer
    would not start), one that requires a client key it only gets through
    ``--variant-header`` (without it: 401, incomplete). The key reaches the variant's config
    through ``${ENV}``, as docs/benchmarks.md advises, so the recorded YAML does not hold it
    either."""
    args = [
        "--smoke", "--scenario", "shared",
        "--variant", "nodedup=settings: {deduplication: {enabled: false}}\n" + PROVIDERS,
        "--variant", "auth=settings: {auth: {enabled: true, api_key: '${BENCH_VARIANT_KEY}'}}",
        "--variant-header", f"auth=x-api-key:{VARIANT_KEY}",
    ]  # fmt: skip
    out = tmp_path_factory.mktemp("bench") / "variants.json"
    return run_bench(args, out, extra_env={"BENCH_VARIANT_KEY": VARIANT_KEY})


def test_variants_run_losslessly_beside_the_plain_balancer(variants):
    proc, report = variants
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["complete"] is True
    assert [v["name"] for v in report["variants"]] == ["nodedup", "auth"]
    for repeat in report["scenarios"]["shared"]["repeats"]:
        for name in ("nodedup", "auth"):
            variant = repeat["variants"][name]
            c = variant["run"]["completeness"]
            assert c["streams"] > 0
            assert c["finished"] == c["streams"], (name, c)
            assert (c["missing"], c["duplicated"], c["reordered"], c["unexpected"]) == (0, 0, 0, 0)
            assert variant["vs_balancer"]["cpu_per_event"] > 0
            assert variant["vs_balancer"]["events_per_s"] > 0
    assert "variant / plain balancer" in proc.stdout
    assert "v:nodedup" in proc.stdout


def test_a_variant_runs_with_its_own_merged_config(variants):
    """The plain balancer shares the identical requests (one upstream call); the variant that
    merged ``deduplication: {enabled: false}`` into the same config does not."""
    _, report = variants
    clients = report["scenarios"]["shared"]["params"]["clients"]
    for repeat in report["scenarios"]["shared"]["repeats"]:
        assert repeat["balancer"]["upstream_calls"] == 1
        assert repeat["variants"]["nodedup"]["run"]["upstream_calls"] == clients
        assert repeat["variants"]["auth"]["run"]["upstream_calls"] == 1


def test_variant_header_values_stay_out_of_the_report(variants):
    proc, report = variants
    assert report["variants"][1]["headers"] == ["x-api-key"]
    assert "auth=x-api-key:***" in report["command"]
    assert VARIANT_KEY not in json.dumps(report) + proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reference", "nginx", "--nginx-binary", "/nonexistent/nginx"],
         "apt-get install nginx-light"),
        (["--variant", "typo=settings: {deduplicaton: {enabled: false}}"],
         "settings.deduplicaton: unknown key"),
        (["--variant", "x=settings: {}", "--variant-header", "y=x-api-key:k"],
         "no --variant named 'y'"),
        (["--variant", "balancer=settings: {}"], "the name is taken"),
    ],
)  # fmt: skip
def test_unusable_reference_or_variant_exits_2_before_starting_anything(tmp_path, args, message):
    proc, report = run_bench(["--smoke", *args], tmp_path / "out.json", timeout=30)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert report == {}


@pytest.fixture(scope="module")
def nginx_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict]:
    if not NGINX.exists():
        pytest.skip(f"{NGINX} is absent (CI does not install nginx; apt-get install nginx-light)")
    args = ["--smoke", "--scenario", "streams100", "--scenario", "nonstream"]
    args += ["--reference", "nginx"]
    return run_bench(args, tmp_path_factory.mktemp("bench") / "nginx.json")


def test_reference_nginx_runs_every_scenario_through_nginx_losslessly(nginx_run):
    proc, report = nginx_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["reference"]["version"].startswith("nginx/")
    assert "proxy_buffering off;" in report["reference"]["config"]
    for name in ("streams100", "nonstream"):
        for repeat in report["scenarios"][name]["repeats"]:
            nginx = repeat["nginx"]
            c = nginx["completeness"]
            assert c["streams"] > 0
            assert c["finished"] == c["streams"], (name, c)
            assert (c["missing"], c["duplicated"], c["reordered"], c["unexpected"]) == (0, 0, 0, 0)
            assert nginx["upstream_calls"] == c["streams"]  # every request went to the mock
            assert nginx["cpu_s"] > 0  # nginx's master and worker were measured
            assert repeat["vs_nginx"]["cpu_per_event"] > 0
            assert repeat["vs_nginx"]["events_per_s"] > 0
            assert repeat["vs_nginx"]["ttfb_p50"] > 0
    assert "ccbalancer / nginx" in proc.stdout


def test_reference_nginx_is_stopped_when_the_bench_ends(nginx_run):
    _, report = nginx_run
    config = report["reference"]["config"]
    workdir = next(
        line.split()[1].rsplit("/", 1)[0] for line in config.splitlines() if line.startswith("pid ")
    )
    left = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if any(workdir in part for part in p.info["cmdline"] or ())
    ]
    assert left == []


# -- --reference aiohttp / python: the floors -----------------------------------------------------


@pytest.fixture(scope="module")
def floor_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict]:
    args = ["--smoke", "--scenario", "streams100", "--scenario", "nonstream"]
    args += ["--reference", "aiohttp", "--reference", "python"]
    return run_bench(args, tmp_path_factory.mktemp("bench") / "floor.json")


@pytest.mark.parametrize("kind", ["aiohttp", "python"])
def test_each_floor_runs_every_scenario_losslessly(floor_run, kind):
    """A floor is a real proxy: every event of every stream and every non-streaming answer
    reaches the client through it, each request costs the mock one call, and its own process
    is what the CPU figure measured."""
    proc, report = floor_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["floors"]["kinds"] == ["aiohttp", "python"]
    for name in ("streams100", "nonstream"):
        for repeat in report["scenarios"][name]["repeats"]:
            floor = repeat[kind]
            c = floor["completeness"]
            assert c["streams"] > 0
            assert c["finished"] == c["streams"], (name, c)
            assert (c["missing"], c["duplicated"], c["reordered"], c["unexpected"]) == (0, 0, 0, 0)
            assert floor["upstream_calls"] == c["streams"]
            assert floor["cpu_s"] > 0
            assert repeat[f"vs_{kind}"]["cpu_per_event"] > 0
            assert f"{kind}_vs_nginx" not in repeat  # nginx did not run
    assert f"ccbalancer / {kind} floor" in proc.stdout
    assert f"{kind} floor / nginx" not in proc.stdout


def test_the_floors_are_stopped_when_the_bench_ends(floor_run):
    proc, _ = floor_run
    assert "ccbalancer / python floor" in proc.stdout  # they ran
    left = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if "ccbalancer.bench.floor" in (p.info["cmdline"] or ())
    ]
    assert left == []
