"""The processes under test: start the mock and the balancer, watch their CPU and RSS, stop them.

Each runs as its own ``python -m ccbalancer`` process, as in production, so the bench's load
generator never shares an event loop or a GIL with what it measures. Children are started in
their own session (a Ctrl-C reaches only the bench, which then stops them) and are stopped by
PID: SIGTERM, a bounded wait, SIGKILL. Their output goes to log files, shown when they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import psutil
import yaml

import ccbalancer
from ccbalancer.bench.client import get_json
from ccbalancer.bench.scenarios import PROVIDER
from ccbalancer.tasks import TaskOwner

READY_TIMEOUT = 30.0  # a cold start imports pydantic, structlog, aiohttp...; the box is shared
STOP_TIMEOUT = 15.0
MB = 1024 * 1024


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (1,000 streams need ~2,000 sockets per process);
    children inherit it. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def balancer_config(mock_url: str) -> dict[str, Any]:
    """The bench's balancer: one Anthropic provider on the mock, every model routed to it,
    sharing on (its default), no history file and no log file on the measured path. A
    mapping, so a ``--variant`` can be merged into it (``variants.py``)."""
    return {
        "providers": [
            {"name": PROVIDER, "type": "anthropic", "base_url": f"{mock_url}/{PROVIDER}",
             "auth_value": "bench-key"},
        ],
        "model_routes": {"*": [{"provider": PROVIDER, "model": "passthrough", "priority": 1}]},
        "settings": {
            "log_level": "WARNING", "log_file_path": "", "history": {"enabled": False},
            "deduplication": {"enabled": True},
        },
    }  # fmt: skip


class Child:
    """One process under test (``python -m ccbalancer ...``, or nginx) on 127.0.0.1:``port``,
    ready once ``GET ready_path`` answers with JSON."""

    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        ready_path: str,
        logs: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = logs / f"{name}.log"
        self._command = command
        self._ready_path = ready_path
        self._env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: ASYNC220  (a fork+exec, no waiting)
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=_same_code_env() | self._env,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
                await get_json(self.url + self._ready_path, timeout=2.0)
                return
            await asyncio.sleep(0.1)
        await self.stop()
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT:g} s: {self.tail()}")

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        for last in (False, True):
            try:
                await asyncio.to_thread(proc.wait, STOP_TIMEOUT)
                return
            except subprocess.TimeoutExpired:
                if last:
                    break
                proc.kill()
        print(f"ccbalancer bench: {self.name} (pid {proc.pid}) did not exit", file=sys.stderr)

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _same_code_env() -> dict[str, str]:
    """The environment for a child, with this very ``ccbalancer`` first on its path: the
    processes measured run the code the bench was started from, whatever is installed."""
    env = dict(os.environ)
    root = str(Path(ccbalancer.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


CCBALANCER = [sys.executable, "-m", "ccbalancer"]


def mock_child(logs: Path) -> Child:
    port = free_port()
    command = [*CCBALANCER, "mock", "--host", "127.0.0.1", "--port", str(port)]
    return Child("mock", command, port, "/_mock/stats", logs)


MOCK_URL_ENV = "BENCH_MOCK_URL"  # a variant's YAML can say "${BENCH_MOCK_URL}/bench"


def balancer_child(name: str, config: dict[str, Any], logs: Path, mock_url: str) -> Child:
    """A balancer named ``name`` (its log and config files are named after it). Its
    environment carries the mock's URL, which the config's ``${ENV}`` expansion can use."""
    path = logs / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    command = [*CCBALANCER, "serve", "-c", str(path), "--host", "127.0.0.1", "--port", str(port)]
    return Child(name, command, port, "/health", logs, {MOCK_URL_ENV: mock_url})


def listener_pid(port: int) -> int | None:
    """The PID listening on 127.0.0.1:``port`` (a balancer the bench did not start), if the
    OS lets us see it."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    return None


def sched_cpu(pid: int) -> float | None:
    """On-CPU seconds of all of ``pid``'s threads from ``/proc/PID/task/*/sched``
    (microsecond resolution, where the kernel exposes it), else None. ``cpu_times`` counts in
    10 ms ticks, too coarse for the one-client baseline of the sharing scenario."""
    total = 0.0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            text = (task / "sched").read_text()
        except FileNotFoundError:
            continue  # a thread that just ended
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("se.sum_exec_runtime"):
                total += float(line.partition(":")[2])  # milliseconds
                break
        else:
            return None
    return total / 1000


class Watch:
    """CPU seconds (user + system) of a process and its descendants over a run, and their RSS
    summed and sampled every ``interval`` seconds. ``pid`` None: nothing is measured (all
    values None). The descendants count because nginx works in a worker under its master;
    ccbalancer and the mock are single processes, so for them this is the process alone."""

    def __init__(self, pid: int | None, interval: float = 0.5) -> None:
        self._proc = psutil.Process(pid) if pid is not None else None
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (seconds since start, RSS bytes)
        self.cpu_s: float | None = None
        self._cpu0: dict[int, float] | None = None
        self._t0 = 0.0
        self._precise = pid is not None and sched_cpu(pid) is not None
        self._owner = TaskOwner("bench-watch")

    def _tree(self) -> list[psutil.Process]:
        assert self._proc is not None
        try:
            return [self._proc, *self._proc.children(recursive=True)]
        except psutil.Error:
            return [self._proc]

    def _cpu(self) -> dict[int, float] | None:
        """Per PID of the tree, by the same method at the start and the end (None if it
        failed meanwhile)."""
        out: dict[int, float] = {}
        for proc in self._tree():
            if self._precise:
                value = sched_cpu(proc.pid)
                if value is None:
                    return None
            else:
                times = proc.cpu_times()
                value = float(times.user + times.system)
            out[proc.pid] = value
        return out

    def _spent(self, end: dict[int, float] | None) -> float | None:
        """CPU seconds since the start; None when a process of the tree exited meanwhile
        (its time is gone with it)."""
        if self._cpu0 is None or end is None or not set(self._cpu0) <= set(end):
            return None
        return round(sum(value - self._cpu0.get(pid, 0.0) for pid, value in end.items()), 4)

    def rss(self) -> int | None:
        if self._proc is None:
            return None
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                total += int(proc.memory_info().rss)
        return total or None

    async def _sample(self) -> None:
        while True:
            rss = self.rss()
            if rss is not None:
                self.samples.append((time.monotonic() - self._t0, rss))
            await asyncio.sleep(self.interval)

    @property
    def peak_rss_mb(self) -> float | None:
        return round(max(rss for _, rss in self.samples) / MB, 1) if self.samples else None

    async def __aenter__(self) -> Watch:
        self._t0 = time.monotonic()
        if self._proc is not None:
            with contextlib.suppress(psutil.Error):
                self._cpu0 = self._cpu()
            self._owner.spawn(self._sample(), "rss")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._owner.close()
        if self._proc is not None:
            with contextlib.suppress(psutil.Error):
                self.cpu_s = self._spent(self._cpu())
                rss = self.rss()
                if rss is not None:
                    self.samples.append((time.monotonic() - self._t0, rss))
