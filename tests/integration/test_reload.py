"""Live reload: all or nothing, health kept by name, in-flight streams keep their snapshot."""

from __future__ import annotations

import os
import signal

from ccbalancer.mock import Script
from tests.conftest import config_text, msg, parse_frames, until


async def test_reload_endpoint_applies_a_new_config(tmp_path, mock, balancer_factory):
    path = tmp_path / "config.yaml"
    path.write_text(config_text(mock, ["a"]))
    b = await balancer_factory(path.read_text(), config_path=str(path))
    path.write_text(config_text(mock, ["a", "b"], routes={"*": ["b", "a"]}))
    resp = await b.session.post(b.url + "/providers/reload")
    assert resp.status == 200
    assert (await resp.json())["providers"] == ["a", "b"]
    done = await b.post(msg())
    await done.read()
    assert done.headers["x-provider-used"] == "b"


async def test_invalid_reload_is_rejected_and_old_config_keeps_serving(
    tmp_path, mock, balancer_factory
):
    path = tmp_path / "config.yaml"
    path.write_text(config_text(mock, ["a"]))
    b = await balancer_factory(path.read_text(), config_path=str(path))
    path.write_text(config_text(mock, ["a"]).replace("priority: 1", "priority: 1, bogus_key: 3"))
    resp = await b.session.post(b.url + "/providers/reload")
    assert resp.status == 422
    message = (await resp.json())["error"]["message"]
    assert str(path) in message and "bogus_key" in message and "unknown key" in message
    ok = await b.post(msg())
    assert ok.status == 200
    await ok.read()
    assert b.runtime.reloads == 0


async def test_health_survives_reload_for_unchanged_names(tmp_path, mock, balancer_factory):
    path = tmp_path / "config.yaml"
    settings = "unhealthy_threshold: 1\nfailure_cooldown: 300\n"
    path.write_text(config_text(mock, ["a", "b"], settings=settings))
    b = await balancer_factory(path.read_text(), config_path=str(path), manual_clock=True)
    mock.enqueue("a", Script(status=500))
    await (await b.post(msg())).read()
    assert b.runtime.health.get("a").state(b.clock.now).value == "cooling_down"
    path.write_text(config_text(mock, ["a", "b", "c"], settings=settings))
    assert (await b.session.post(b.url + "/providers/reload")).status == 200
    assert b.runtime.health.get("a").state(b.clock.now).value == "cooling_down"
    resp = await b.post(msg("after reload"))
    await resp.read()
    assert resp.headers["x-provider-used"] == "b"
    assert len(mock.requests("a")) == 1


async def test_file_change_is_picked_up_without_a_request(tmp_path, mock, balancer_factory):
    path = tmp_path / "config.yaml"
    path.write_text(config_text(mock, ["a"]))
    b = await balancer_factory(path.read_text(), config_path=str(path))
    path.write_text(config_text(mock, ["a", "b"]))
    os.utime(path, (1, 1))  # a distinct mtime even on coarse file systems
    await until(lambda: b.runtime.reloads == 1)
    assert [p.name for p in b.runtime.config.providers] == ["a", "b"]


async def test_sighup_reloads(tmp_path, mock, balancer_factory):
    path = tmp_path / "config.yaml"
    path.write_text(config_text(mock, ["a"]))
    b = await balancer_factory(path.read_text(), config_path=str(path))
    b.runtime._mtime = None  # the watcher must not be what reloads here
    path.write_text(config_text(mock, ["a", "b"]))
    b.runtime._mtime = path.stat().st_mtime
    os.kill(os.getpid(), signal.SIGHUP)
    await until(lambda: b.runtime.reloads == 1)
    assert "b" in b.runtime.config.providers_by_name


async def test_in_flight_stream_finishes_on_its_snapshot_when_its_provider_is_removed(
    tmp_path, mock, balancer_factory
):
    path = tmp_path / "config.yaml"
    path.write_text(config_text(mock, ["a"]))
    b = await balancer_factory(path.read_text(), config_path=str(path))
    mock.configure("a", Script(events=10, delay=0.05))
    resp = await b.post(msg())
    first = await resp.content.readany()
    assert first
    path.write_text(config_text(mock, ["z"]))
    assert (await b.session.post(b.url + "/providers/reload")).status == 200
    rest = await resp.read()
    names = [n for n, _ in parse_frames(first + rest)]
    assert names[-1] == "message_stop" and "error" not in names
