"""The bench's pure parts behind ``--variant`` and ``--reference nginx``: how a variant's YAML is
merged into the balancer's config, how ratios become the medians and target verdicts the
report prints, and what of the command line the JSON keeps."""

from __future__ import annotations

from ccbalancer.bench import compare, report
from ccbalancer.bench.procs import balancer_config
from ccbalancer.bench.variants import deep_merge, parse


def test_variant_yaml_merges_mappings_and_replaces_everything_else():
    base = balancer_config("http://127.0.0.1:9")
    (variant,) = parse(
        ["slow=settings: {deduplication: {orphan_grace: 0}, unhealthy_http_codes: [500]}"],
        None,
        base,
    )
    merged = variant.config(base)
    # a nested mapping keeps its other keys
    assert merged["settings"]["deduplication"] == {"enabled": True, "orphan_grace": 0}
    assert merged["settings"]["log_file_path"] == ""
    assert merged["settings"]["unhealthy_http_codes"] == [500]
    assert merged["providers"] == base["providers"]
    assert "orphan_grace" not in base["settings"]["deduplication"]  # the base is untouched


def test_a_list_in_the_overlay_replaces_the_list_below():
    assert deep_merge({"a": [1, 2], "b": {"c": 1}}, {"a": [3]}) == {"a": [3], "b": {"c": 1}}
    assert deep_merge({"a": {"b": 1}}, {"a": 2}) == {"a": 2}


def _run(cpu_ms: float, rate: float, ttfb: float) -> dict:
    return {
        "cpu_ms_per_event": cpu_ms,
        "events_per_s": rate,
        "ttfb_ms": {"p50": ttfb},
        "first_event_ms": {"p50": 20.0},
        "latency_ms": {"p99": 1.0},
    }


def test_report_shows_the_median_of_per_repeat_ratios_and_judges_targets_on_it():
    """A slow repeat moves both proxies together; the per-repeat ratio stays put, and the
    median over repeats is what the target is judged on."""
    pairs = [  # (ccbalancer, nginx) per repeat
        (_run(0.10, 950.0, 3.0), _run(0.05, 1000.0, 1.0)),
        (_run(0.40, 900.0, 3.0), _run(0.20, 1000.0, 2.0)),  # a slow minute for both
        (_run(0.09, 990.0, 3.0), _run(0.03, 1000.0, 1.0)),
    ]
    repeats = [{"vs_nginx": compare.ratios(ours, ref)} for ours, ref in pairs]
    median = report.merge(repeats)
    assert median["vs_nginx"]["cpu_per_event"] == 2.0  # ratios 2, 2, 3
    assert median["vs_nginx"]["events_per_s"] == 0.95
    assert median["vs_nginx"]["ttfb_p50"] == 3.0  # ratios 3, 1.5, 3
    checks = {c["target"]: c for c in compare.targets({"streams1000": {"median": median}})}
    assert checks["CPU/event <= 2x nginx"]["met"] is True
    assert checks["events/s >= 0.95x nginx"]["met"] is True
    assert checks["TTFB p50 <= 2x nginx"]["met"] is False
    assert checks["TTFB p50 <= 2x nginx"]["value"] == "3 x"


def test_each_target_says_where_the_aiohttp_floor_stands_against_nginx():
    """With ``--reference aiohttp`` beside nginx, a target line tells whether the thinnest
    proxy on the prescribed stack meets it: the difference between "our code is too slow" and
    "nothing on this stack can"."""
    balancer, nginx = _run(0.30, 900.0, 40.0), _run(0.10, 1000.0, 2.0)
    floor = _run(0.21, 990.0, 8.0)
    bare = _run(0.08, 1000.0, 2.0)
    repeat = {
        "vs_nginx": compare.ratios(balancer, nginx),
        "vs_aiohttp": compare.ratios(balancer, floor),
        "aiohttp_vs_nginx": compare.ratios(floor, nginx),
        "vs_python": compare.ratios(balancer, bare),
        "python_vs_nginx": compare.ratios(bare, nginx),
    }
    median = report.merge([repeat])
    checks = {c["target"]: c for c in compare.targets({"streams1000": {"median": median}})}
    cpu = checks["CPU/event <= 2x nginx"]
    assert cpu["met"] is False
    assert cpu["floors"] == {"aiohttp": {"value": 2.1, "met": False},
                             "python": {"value": 0.8, "met": True}}  # fmt: skip
    assert cpu["value"] == "3 x   (aiohttp floor: 2.1 x, not met; python floor: 0.8 x, met)"
    rate = checks["events/s >= 0.95x nginx"]
    assert (rate["met"], rate["floors"]["aiohttp"]["met"]) == (False, True)
    text = compare.lines({"streams1000": {"median": median}})
    for title in ("ccbalancer / aiohttp floor", "aiohttp floor / nginx",
                  "ccbalancer / python floor", "python floor / nginx"):  # fmt: skip
        assert title in text


def test_no_ratio_against_a_missing_or_zero_figure():
    ours = _run(0.1, 100.0, 1.0)
    theirs = _run(0.0, 100.0, 1.0) | {"ttfb_ms": {"p50": None}}
    vs = compare.ratios(ours, theirs)
    assert vs["cpu_per_event"] is None
    assert vs["ttfb_p50"] is None
    assert vs["events_per_s"] == 1.0


def test_recorded_command_masks_variant_header_values():
    argv = [
        "bench", "--variant", "auth=settings: {}", "--variant-header", "auth=x-api-key:s3cret",
        "--variant-header=auth=authorization:Bearer s3cret",
    ]  # fmt: skip
    line = report.command_line(argv)
    assert "s3cret" not in line
    assert "--variant-header auth=x-api-key:***" in line
    assert "--variant-header=auth=authorization:***" in line
