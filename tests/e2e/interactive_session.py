"""One interactive Claude Code session, run whole inside a loopback-only network namespace.

Claude Code 2.1.330 sends its title side request only in an interactive session (``-p``
sends none), and only without ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC``, the flag the other
CLI tests use to keep it offline. So this runs the TUI under tmux (CLAUDE_CODE.md section 1)
with telemetry, error reporting, updates and feature flags off, and keeps it offline the hard
way: the test starts this script with ``unshare -n``, so the mock, the balancer and the CLI
share a network namespace that holds nothing but ``lo``.

Usage: ``python interactive_session.py DIR CLAUDE_BIN PROMPT``. ``DIR`` holds the balancer's
``config.yaml`` (port ``BALANCER_PORT``, providers on the mock at ``MOCK_PORT``); the history
and the logs are written there. Prints one JSON line: the requests the balancer finished and
the last screen (for a failing test's report). Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MOCK_PORT = 18080
BALANCER_PORT = 18081
API_KEY = "sk-test-ccbalancer-interactive-0123456789"
QUIET = {  # everything the CLI offers to stay quiet, except the non-essential-traffic flag
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_UPDATES": "1",
    "DISABLE_GROWTHBOOK": "1",
    "CLAUDE_CODE_DISABLE_FEATURE_FLAGS": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "DISABLE_INSTALLATION_CHECKS": "1",
}


def _get(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            value = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _until(check: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(check) and check():
            return True
        time.sleep(0.2)
    return False


def main(work: Path, claude: str, prompt: str) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    python = sys.executable
    logs = [(work / name).open("wb") for name in ("mock.out", "balancer.out")]
    children = [
        subprocess.Popen(
            [python, "-m", "ccbalancer", "mock", "--port", str(MOCK_PORT)],
            stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True,
        ),
        subprocess.Popen(
            [python, "-m", "ccbalancer", "serve", "-c", str(work / "config.yaml")],
            stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True,
        ),
    ]  # fmt: skip
    balancer = f"http://127.0.0.1:{BALANCER_PORT}"
    tmux = ["tmux", "-S", str(work / "tmux.sock")]
    screen = ""
    try:
        up = _until(lambda: _get(balancer + "/health") and _get(
            f"http://127.0.0.1:{MOCK_PORT}/_mock/stats"), 60)  # fmt: skip
        if not up:
            raise SystemExit("the mock or the balancer did not come up")
        home, cwd = work / "home", work / "project"
        home.mkdir()
        cwd.mkdir()
        # skips onboarding, the custom-key prompt and the folder-trust prompt
        (home / ".claude.json").write_text(
            json.dumps(
                {
                    "hasCompletedOnboarding": True,
                    "theme": "dark",
                    "customApiKeyResponses": {"approved": [API_KEY[-20:]], "rejected": []},
                    "projects": {str(cwd): {"hasTrustDialogAccepted": True, "allowedTools": []}},
                }
            )
        )
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "TERM": "xterm-256color",
            "ANTHROPIC_BASE_URL": balancer,
            "ANTHROPIC_API_KEY": API_KEY,
            **QUIET,
        }
        command = "env -i " + " ".join(f"{k}={v}" for k, v in env.items()) + f" {claude}"
        subprocess.run(
            [*tmux, "new-session", "-d", "-x", "200", "-y", "50", "-c", str(cwd), command],
            check=True,
        )

        def pane() -> str:
            shown = [*tmux, "capture-pane", "-p"]
            return subprocess.run(shown, check=False, capture_output=True, text=True).stdout

        _until(lambda: "❯" in pane(), 60)  # the prompt line of the TUI
        subprocess.run([*tmux, "send-keys", "-l", prompt], check=True)
        time.sleep(0.5)  # a paste and its Enter in one go can land as a newline in the input
        subprocess.run([*tmux, "send-keys", "Enter"], check=True)

        def finished() -> int:
            data = _get(balancer + "/dashboard/data") or {}
            totals = data.get("totals")
            return int(totals.get("requests", 0)) if isinstance(totals, dict) else 0

        _until(lambda: finished() >= 2, 90)  # the title request and the turn itself
        screen = pane()
        subprocess.run([*tmux, "send-keys", "-l", "/exit"], check=False)
        subprocess.run([*tmux, "send-keys", "Enter"], check=False)
        alive = [*tmux, "has-session"]
        _until(lambda: subprocess.run(alive, check=False, capture_output=True).returncode, 10)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)
        for child in reversed(children):  # the balancer first: it writes its history on exit
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        for log in logs:
            log.close()
    print(json.dumps({"screen": screen}))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
