"""The real Claude Code CLI, interactive, with its side requests on: its title request goes to
the background route and its turn to the main one, as the history shows (issue 17).

The session runs whole in a loopback-only network namespace (``interactive_session.py``):
``unshare -n`` as root, ``unshare -rn`` (a user namespace) otherwise; without ``unshare``,
``tmux``, ``ip`` or the CLI the test is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.interactive_session import BALANCER_PORT, MOCK_PORT
from tests.e2e.test_claude_code import claude_bin  # noqa: F401 - the fixture

pytestmark = [pytest.mark.e2e, pytest.mark.claude_cli, pytest.mark.timeout(300)]

DRIVER = Path(__file__).with_name("interactive_session.py")
REPO = Path(__file__).resolve().parents[2]
CONFIG = f"""providers:
  - {{name: main, type: anthropic, base_url: "http://127.0.0.1:{MOCK_PORT}/main", auth_value: sk-m}}
  - {{name: side, type: anthropic, base_url: "http://127.0.0.1:{MOCK_PORT}/side", auth_value: sk-s}}
model_routes:
  "*": [{{provider: main}}]
  titles: [{{provider: side}}]
route_rules:
  - when: {{kind: background}}
    use: titles
settings:
  port: {BALANCER_PORT}
  log_file_path: balancer.jsonl
  history: {{path: history.sqlite3}}
"""


def _namespace() -> list[str]:
    """The ``unshare`` command line that gives a network namespace with only ``lo``."""
    missing = [tool for tool in ("unshare", "tmux", "ip") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} to run Claude Code interactively offline")
    command = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    if subprocess.run([*command, "true"], check=False, capture_output=True).returncode != 0:
        pytest.skip(f"{' '.join(command)} is not permitted here")
    return command


async def test_claude_codes_title_request_and_its_turn_go_to_different_providers(
    claude_bin,  # noqa: F811 - the fixture
    tmp_path,
):
    namespace = _namespace()
    (tmp_path / "config.yaml").write_text(CONFIG)
    proc = await asyncio.create_subprocess_exec(
        *namespace, sys.executable, str(DRIVER), str(tmp_path), claude_bin,
        "Reply with exactly: PONG",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    async with asyncio.timeout(240):
        out, err = await proc.communicate()
    report = f"driver: {out.decode()[-3000:]}\n{err.decode()[-3000:]}"
    assert proc.returncode == 0, report

    with sqlite3.connect(tmp_path / "history.sqlite3") as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY ts")]
    seen = [(r["model"], r["provider"], r["kind"], r["rule"], r["status"]) for r in rows]
    assert len(rows) == 2, f"{seen}\n{report}"
    # Claude Code names its main model in both: the title request went elsewhere by its shape
    assert ("claude-opus-5-5", "side", "background", "route_rules[0]", 200) in seen, report
    assert ("claude-opus-5-5", "main", "", "", 200) in seen, report
    assert json.loads(out.decode().strip().splitlines()[-1])["screen"]
