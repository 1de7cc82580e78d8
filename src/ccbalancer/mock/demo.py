"""``ccbalancer demo``: the balancer in front of built-in simulated providers.

One of each kind of upstream the balancer must handle: a healthy Anthropic provider that
streams slowly enough to watch, a flaky one that fails half its requests (a 529 or a stream
cut before content, alternately — both invisible to a client behind the balancer), and an
OpenAI-format one that the balancer has to translate. All three act on requests that offer
tools (``Script.act``), so Claude Code shows a whole tool-use turn. The request history goes to
a fresh temporary folder that outlives the demo, so ``ccbalancer stats`` works afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

from ccbalancer.mock.script import Script

_TEXT = (
    "Hello from the ccbalancer demo. This reply is streamed word by word by the {name} "
    "provider, through the balancer, to you."
)

DEMO_PROVIDERS: dict[str, Script] = {
    "healthy": Script(
        text=_TEXT.format(name="healthy"), delay=0.03, first_event_delay=0.03, act=True
    ),
    "flaky": Script(text=_TEXT.format(name="flaky"), delay=0.03, fail_rate=0.5, act=True),
    "openai": Script(text=_TEXT.format(name="openai"), delay=0.03, act=True),
}

# which wire format the balancer must use for each demo provider: the mock itself answers
# any name in both formats, the path decides (MockServer.anthropic_url / openai_url)
DEMO_KINDS: dict[str, str] = {"healthy": "anthropic", "flaky": "anthropic", "openai": "openai"}
DEFAULT_PORT = 9090


def demo_config_text(mock_url: str, port: int, history: Path) -> str:
    return f"""
providers:
  - {{name: flaky, type: anthropic, base_url: "{mock_url}/flaky", auth_value: demo-key}}
  - {{name: healthy, type: anthropic, base_url: "{mock_url}/healthy", auth_value: demo-key}}
  - {{name: openai, type: openai, base_url: "{mock_url}/openai/v1", auth_value: demo-key}}
model_routes:
  "*haiku*":
    - {{provider: openai, model: gpt-4o-mini, priority: 1}}
    - {{provider: healthy, model: passthrough, priority: 2}}
  "*":
    - {{provider: flaky, model: passthrough, priority: 1}}
    - {{provider: healthy, model: passthrough, priority: 2}}
    - {{provider: openai, model: gpt-4o, priority: 3}}
settings:
  failure_cooldown: 15
  unhealthy_threshold: 2
  log_file_path: ""
  history: {{path: {json.dumps(str(history))}, enabled: true}}
  port: {port}
"""


def banner(base: str, mock_url: str, history: Path) -> str:
    body = (
        '\'{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,'
        '"messages":[{"role":"user","content":"Hello"}]}\''
    )
    return (
        f"\nccbalancer demo: the balancer is running at {base}\n"
        f"  dashboard: {base}/dashboard\n\n"
        "Point Claude Code at it (in another terminal), then ask it to list the files:\n"
        f"  export ANTHROPIC_BASE_URL={base}\n"
        "  export ANTHROPIC_AUTH_TOKEN=demo\n"
        "  claude\n\n"
        "Or watch a stream:\n"
        f"  curl -N {base}/v1/messages -H 'content-type: application/json' -d {body}\n\n"
        f"Provider state: curl {base}/providers    Metrics: curl {base}/metrics\n"
        f"Behind it: simulated providers flaky -> healthy -> openai at {mock_url}\n"
        f"Request history: {history}\n"
        f"  see it with: ccbalancer stats --db {history}\n"
        "Ctrl-C stops it.\n"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"balancer port (default {DEFAULT_PORT})"
    )


async def run_demo(port: int, history: Path) -> None:
    """Simulated providers on a free port, the balancer on ``port``, until SIGINT/SIGTERM."""
    from ccbalancer.config.load import parse_config
    from ccbalancer.mock.server import MockServer
    from ccbalancer.server import serve_app

    async with MockServer(port=0, seed=1) as mock:
        for name, script in DEMO_PROVIDERS.items():
            mock.configure(name, script)
        config = parse_config(demo_config_text(mock.url, port, history), "<demo>")

        def ready(bound: int) -> None:
            print(banner(f"http://127.0.0.1:{bound}", mock.url, history), flush=True)

        await serve_app(config, None, "127.0.0.1", port, on_ready=ready)


def run(args: argparse.Namespace) -> int:
    from ccbalancer.server import ListenError, install_uvloop

    history = Path(tempfile.mkdtemp(prefix="ccbalancer-demo-")) / "history.sqlite3"
    install_uvloop()
    try:
        asyncio.run(run_demo(args.port, history))
    except ListenError as error:
        shutil.rmtree(history.parent, ignore_errors=True)  # nothing worth keeping was recorded
        print(f"ccbalancer: {error}", file=sys.stderr)
        return 2
    print(f"\nThe demo's request history stays in {history}: ccbalancer stats --db {history}")
    return 0
