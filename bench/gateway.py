#!/usr/bin/env python3
"""The AI gateway's overhead, as TensorZero measures it: a mock provider on the same box,
the same request sent straight to it and through the gateway, under a steady load.

The mock is a node HTTP server answering every chat completion with one canned JSON answer.
wrk sends `POST /v1/chat/completions` (direct) and `POST /gateway/v1/chat/completions`
(through `reactor-server`, release build, SQLite, with usage recorded and a per-key limit
checked on every request) at about --rate requests/s: --conns connections, each pausing
conns/rate seconds between requests (wrk's `delay()`). Printed: requests/s, p50 and p99 of
each, and the added latency (gateway − direct) at p50 and p99.

Target: p99 added latency ≤ 1 ms at 2,000 requests/s.

With --pin, the server runs on CPU 1 and wrk and the mock on CPU 0 (taskset), so the load
generator and the mock do not take the server's core: on a two-core box this separates the
gateway's own cost from the contention of three processes for two cores.

A reference proxy runs in the same run when nginx is installed (`apt-get install nginx-light`):
nginx as a bare reverse proxy to the same mock (keep-alive upstream, no logging, one worker),
so the added latency of a proxy that does nothing but forward is printed beside the gateway's.
That is the floor any gateway pays on this machine: one more loopback hop and one more process
to schedule.

Usage: bench/gateway.py [--seconds N] [--rate N] [--conns N] [--no-limits] [--pin] [--no-peer]
Needs: cargo, node, wrk, python3 (and taskset for --pin, nginx for the reference proxy).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

from common import Process, build_reactor, free_port, run, wait_http, wrk

MOCK = r"""
const http = require('http')
const answer = JSON.stringify({id: 'chatcmpl-bench', object: 'chat.completion', created: 1, model: 'mock',
  choices: [{index: 0, message: {role: 'assistant', content: 'Hello! How can I help you today?'}, finish_reason: 'stop'}],
  usage: {prompt_tokens: 12, completion_tokens: 9, total_tokens: 21}})
http.createServer((req, res) => {
  req.on('data', () => {})
  req.on('end', () => {
    if (req.url === '/health') return res.end('ok')
    res.writeHead(200, {'content-type': 'application/json', 'content-length': Buffer.byteLength(answer)})
    res.end(answer)
  })
}).listen(Number(process.argv[2]), '127.0.0.1')
"""

BODY = {"model": "bench", "messages": [{"role": "user", "content": "Hello, how are you?"}], "max_tokens": 64}


def script(tmp, delay_ms, key):
    path = os.path.join(tmp, "post.lua")
    headers = 'wrk.headers["content-type"] = "application/json"\n'
    if key:
        headers += f'wrk.headers["authorization"] = "Bearer {key}"\n'
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write(f"wrk.body = {json.dumps(json.dumps(BODY))}\n")
        f.write(headers)
        f.write(f"function delay() return {delay_ms} end\n")
    return path


NGINX = """
worker_processes 1;
daemon off;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  fastcgi_temp_path {tmp}/nginx-fastcgi;
  uwsgi_temp_path {tmp}/nginx-uwsgi;
  scgi_temp_path {tmp}/nginx-scgi;
  upstream mock {{ server 127.0.0.1:{mock_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location /gateway/v1/ {{
      proxy_pass http://mock/v1/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def nginx_proxy(tmp, mock_port, prefix):
    """nginx forwarding /gateway/v1/ to the mock: the reference proxy (None without nginx)."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not binary:
        print("nginx is not installed: no reference proxy (apt-get install nginx-light)", file=sys.stderr)
        return None, None
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX.format(tmp=tmp, mock_port=mock_port, port=port,
                             user="user root;" if os.geteuid() == 0 else ""))
    return Process([*prefix, binary, "-c", conf, "-p", tmp]), port


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--conns", type=int, default=20)
    parser.add_argument("--no-limits", action="store_true", help="no [[gateway.limits]]: no reservation per request")
    parser.add_argument("--pin", action="store_true", help="server on CPU 1; wrk and the mock on CPU 0")
    parser.add_argument("--no-peer", action="store_true", help="no nginx reference proxy")
    args = parser.parse_args()
    client_cpu = ["taskset", "-c", "0"] if args.pin else []
    server_cpu = ["taskset", "-c", "1"] if args.pin else []
    for tool in ["wrk", "node"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing")
    release = build_reactor()
    delay_ms = max(1, round(args.conns * 1000 / args.rate))
    with tempfile.TemporaryDirectory() as tmp:
        mock_js = os.path.join(tmp, "mock.js")
        with open(mock_js, "w") as f:
            f.write(MOCK)
        mock_port = free_port()
        mock = Process([*client_cpu, "node", mock_js, str(mock_port)])
        project = os.path.join(tmp, "project")
        os.makedirs(project)
        with open(os.path.join(project, "reactor.toml"), "w") as f:
            f.write(f'''project_id = "bench-gateway"
name = "bench"

[[gateway.providers]]
name = "mock"
kind = "openai-compatible"
base_url = "http://127.0.0.1:{mock_port}/v1"

[[gateway.models]]
name = "bench"
targets = [{{ provider = "mock", model = "mock" }}]

{{LIMITS}}
[[gateway.prices]]
model = "mock"
input_per_million = 0.15
output_per_million = 0.6
'''.replace("{LIMITS}", "" if args.no_limits else '[[gateway.limits]]\nper = "key"\nrequests_per_minute = 100000000\n'))
        env = {**os.environ, "REACTOR_DATABASE_URL": f"sqlite://{os.path.join(tmp, 'server.db')}",
               "REACTOR_LOG": "warn", "REACTOR_PROJECT": project, "REACTOR_CACHE_DIR": os.path.join(tmp, "cache")}
        server_bin = os.path.join(release, "reactor-server")
        key = run([server_bin, "keys", "create", "--tier", "svc", "--name", "bench"], env=env).stdout.strip()
        port = free_port()
        server = Process([*server_cpu, server_bin], env={**env, "REACTOR_LISTEN": f"127.0.0.1:{port}"})
        nginx, nginx_port = (None, None) if args.no_peer else nginx_proxy(tmp, mock_port, server_cpu)
        proxied = None
        try:
            wait_http(mock_port, "/health")
            wait_http(port, "/healthz")
            direct = wrk(f"http://127.0.0.1:{mock_port}/v1/chat/completions", args.seconds, 2, args.conns,
                         script=script(tmp, delay_ms, None), prefix=client_cpu)
            gateway = wrk(f"http://127.0.0.1:{port}/gateway/v1/chat/completions", args.seconds, 2, args.conns,
                          script=script(tmp, delay_ms, key), prefix=client_cpu)
            if nginx:
                server.stop()  # nginx is measured alone with the mock, as the gateway was
                wait_http(nginx_port, "/gateway/v1/health")
                proxied = wrk(f"http://127.0.0.1:{nginx_port}/gateway/v1/chat/completions", args.seconds, 2,
                              args.conns, script=script(tmp, delay_ms, None), prefix=client_cpu)
        finally:
            server.stop()
            if nginx:
                nginx.stop()
            mock.stop()
    pinned = "; server on CPU 1, wrk and the mock on CPU 0" if args.pin else ""
    print(f"load: {args.conns} connections, each waiting {delay_ms} ms between requests (~{args.rate} req/s){pinned}")
    rows = [("direct", direct), ("gateway", gateway)] + ([("nginx", proxied)] if proxied else [])
    print(f"{'':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'added p50':>11}{'added p99':>11}")
    for name, r in rows:
        added = "" if r is direct else f"{r['p50'] - direct['p50']:>11.3f}{r['p99'] - direct['p99']:>11.3f}"
        print(f"{name:<10}{r['rps']:>10.0f}{r['p50']:>10.3f}{r['p99']:>10.3f}{added}")
    print("target: the gateway's added p99 ≤ 1 ms at 2,000 req/s"
          + ("; nginx is a bare reverse proxy to the same mock, the floor on this machine" if proxied else ""))


if __name__ == "__main__":
    sys.exit(main())
