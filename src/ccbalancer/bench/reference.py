"""``--reference nginx``: the same scenarios through nginx, the yardstick the speed targets use.

This machine's speed varies by several times between days, so an absolute CPU figure says
little; a ratio to a plain streaming reverse proxy measured in the same invocation does. The
bench writes an nginx config into its temp directory (one worker, ``proxy_buffering off``,
HTTP/1.1 keep-alive to the mock, every path and log inside that directory), starts nginx in
the foreground as a child process like the mock and the balancer, and stops it by its PID.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from ccbalancer.bench.procs import Child, free_port
from ccbalancer.bench.scenarios import PROVIDER

NGINX = "/usr/sbin/nginx"
INSTALL = "apt-get install nginx-light"
READY_PATH = "/_bench/ready"
UPSTREAM_IDLE = 1024  # idle keep-alive connections nginx keeps to the mock (per worker)
MAX_CONNECTIONS = 16384  # 1,000 streams take ~2,000 (client side + upstream side)

_CONFIG = """\
# ccbalancer bench --reference nginx: a plain streaming reverse proxy in front of the mock
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {workdir}/nginx.pid;
error_log {error_log} warn;
{user}
events {{
    worker_connections {connections};
}}

http {{
    access_log {workdir}/nginx-access.log combined buffer=64k flush=1s;
    client_body_temp_path {workdir}/nginx-body;
    proxy_temp_path {workdir}/nginx-proxy;
    fastcgi_temp_path {workdir}/nginx-fastcgi;
    uwsgi_temp_path {workdir}/nginx-uwsgi;
    scgi_temp_path {workdir}/nginx-scgi;
    keepalive_requests 1000000;
    # bodies up to the balancer's own limit, kept in memory (a 300 KB Claude Code body would
    # otherwise go through a temp file: the default buffer is 16 KB)
    client_max_body_size 32m;
    client_body_buffer_size 1m;

    upstream mock {{
        server {upstream};
        keepalive {idle};
        keepalive_requests 1000000;
    }}

    server {{
        listen 127.0.0.1:{port};

        location = {ready} {{
            default_type application/json;
            return 200 '{{}}';
        }}

        location / {{
            proxy_pass http://mock/{provider}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def nginx_config(mock_url: str, port: int, workdir: Path, error_log: Path, nofile: int) -> str:
    """The config text. ``/v1/messages`` on nginx is the mock's ``/bench/v1/messages``, the
    same upstream URL the balancer calls, so every run sends the same requests to the mock."""
    parts = urlsplit(mock_url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"the mock URL needs a host and a port: {mock_url!r}")
    # nginx run by root switches its worker to "nobody", which could not reach this 0700
    # temp directory; keep the bench's own identity instead
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    return _CONFIG.format(
        nofile=nofile,
        connections=max(1024, min(MAX_CONNECTIONS, nofile - 64)),
        workdir=workdir,
        error_log=error_log,
        user=user,
        upstream=f"{parts.hostname}:{parts.port}",
        idle=UPSTREAM_IDLE,
        port=port,
        ready=READY_PATH,
        provider=PROVIDER,
    )


def nginx_child(binary: str, mock_url: str, logs: Path, nofile: int) -> tuple[Child, str]:
    """nginx (not started yet) proxying to ``mock_url``, and its config text. ``-e`` sends
    what nginx logs before it has read the config to the same file (nginx >= 1.19.5)."""
    port = free_port()
    conf = logs / "nginx.conf"
    error_log = logs / "nginx.log"
    text = nginx_config(mock_url, port, logs, error_log, nofile)
    conf.write_text(text)
    command = [binary, "-p", f"{logs}/", "-c", str(conf), "-e", str(error_log)]
    return Child("nginx", command, port, READY_PATH, logs), text


def nginx_version(binary: str) -> str:
    """``nginx/1.22.1`` (nginx prints its version on stderr)."""
    try:
        done = subprocess.run(
            [binary, "-v"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return (done.stderr or done.stdout).strip().removeprefix("nginx version: ")
