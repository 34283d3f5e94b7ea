#!/usr/bin/env python3
"""Functions: one trivial JSON handler through /fn/v1, against the same handler in Deno and
workerd, in one run on one machine.

  warm     wrk -t2 -c64 over loopback: requests/s, p50, p99
  ceiling  Reactor only: the same server and key check answering `GET /fn/v1` (the function
           list, no handler run), i.e. what any handler's throughput is bounded by here
  component  Reactor only: a WASI HTTP component (crates/reactor-functions/tests/fixtures/
           http-handler.wat wrapped by the `componentize` example), a fresh instance per
           request; its GET answers `GET <path>||dirs=0|REACTOR_URL=…` as text
  c1       wrk -t1 -c1: one request at a time
  start    process start → first 200 from the handler
  first    the first invocation's latency once the server answers /healthz (Reactor), i.e.
           the function's cold start after load
  reload   Reactor dev only: after the file changes, the first invocation of the new code
           (its cold start), and the time from the write to serving it (that includes the
           dev server's 500 ms poll)

The peers come from npm (`deno`, `workerd`), installed into bench/.cache/npm.

Usage: bench/functions.py [--seconds N] [--only reactor,deno,workerd]
Needs: cargo, wrk, node/npm.
"""

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import time

from common import CACHE, ROOT, Process, build_reactor, free_port, run, wrk

HANDLER_TS = """export default (req: Request): Response =>
  Response.json({ hello: "world", path: new URL(req.url).pathname });
"""
HANDLER_JS = """export default {
  fetch(req) { return Response.json({ hello: "world", path: new URL(req.url).pathname }); },
};
"""
DENO_JS = """Deno.serve({ port: Number(Deno.args[0]), hostname: "127.0.0.1", onListen() {} },
  (req) => Response.json({ hello: "world", path: new URL(req.url).pathname }));
"""
WORKERD_CAPNP = """using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .worker) ],
  sockets = [ (name = "http", address = "127.0.0.1:PORT", http = (), service = "main") ],
);
const worker :Workerd.Worker = (
  modules = [ (name = "worker", esModule = embed "worker.js") ],
  compatibilityDate = "2024-09-01",
);
"""


def npm_peers():
    """The deno and workerd binaries, installed once into bench/.cache/npm."""
    prefix = os.path.join(CACHE, "npm")
    deno = os.path.join(prefix, "node_modules", "@deno", "linux-x64-glibc", "deno")
    workerd = os.path.join(prefix, "node_modules", "@cloudflare", "workerd-linux-64", "bin", "workerd")
    if not (os.path.exists(deno) and os.path.exists(workerd)):
        print("installing deno and workerd from npm…", file=sys.stderr)
        os.makedirs(prefix, exist_ok=True)
        run(["npm", "install", "--prefix", prefix, "--no-audit", "--no-fund", "deno", "workerd"])
    return deno, workerd


def get(port, path, headers=None):
    """One GET on a fresh connection: (status, body, seconds)."""
    started = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers=headers or {})
    res = c.getresponse()
    body = res.read()
    return res.status, body, time.perf_counter() - started


def until_ok(port, path, headers=None, timeout=30, want=None):
    """Polls until `path` answers 200 (with `want` in the body); the seconds it took."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            status, body, _ = get(port, path, headers)
            if status == 200 and (want is None or want in body):
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.002)
    raise SystemExit(f"{path} on port {port} never answered 200")


def load(port, path, seconds, headers=()):
    url = f"http://127.0.0.1:{port}{path}"
    return {"warm": wrk(url, seconds, 2, 64, headers), "c1": wrk(url, seconds, 1, 1, headers)}


def componentize(out):
    """The test fixture's core module wrapped into a wasi:http component (release build)."""
    wat = os.path.join(ROOT, "crates", "reactor-functions", "tests", "fixtures", "http-handler.wat")
    run(["cargo", "run", "--release", "--locked", "-q", "-p", "reactor-functions", "--features", "testing",
         "--example", "componentize", "--", wat, out], cwd=ROOT)


def bench_reactor(release, seconds, tmp):
    project = os.path.join(tmp, "reactor")
    os.makedirs(os.path.join(project, "functions", "hello"))
    os.makedirs(os.path.join(project, "functions", "component"))
    componentize(os.path.join(project, "functions", "component", "handler.wasm"))
    with open(os.path.join(project, "reactor.toml"), "w") as f:
        f.write('project_id = "bench-fn-0a1b2c3d"\nname = "Bench"\n\n'
                '[[functions]]\nname = "hello"\nsource = "functions/hello"\n'
                # the load is 64 connections at once
                'concurrency = 256\n\n'
                '[[functions]]\nname = "warm"\nsource = "functions/hello"\nisolation = "instance"\n'
                'concurrency = 256\n\n'
                '[[functions]]\nname = "component"\nsource = "functions/component"\nentry = "handler.wasm"\n'
                'concurrency = 256\n')
    source = os.path.join(project, "functions", "hello", "index.ts")
    with open(source, "w") as f:
        f.write(HANDLER_TS)
    port = free_port()
    env = dict(os.environ, REACTOR_HOME=os.path.join(tmp, "home"), REACTOR_KEYCHAIN="off", REACTOR_LOG="warn")
    started = time.perf_counter()
    server = Process([os.path.join(release, "reactor"), "dev", "--port", str(port)], cwd=project, env=env)
    try:
        until_ok(port, "/healthz")
        start = time.perf_counter() - started
        with open(os.path.join(project, ".reactor", "keys.json")) as f:
            keys = json.load(f)
        key = keys["public"]
        auth = {"apikey": key}
        status, body, first = get(port, "/fn/v1/hello", auth)
        if status != 200:
            raise SystemExit(f"reactor: {status} {body!r}")
        result = load(port, "/fn/v1/hello", seconds, [f"apikey: {key}"])
        result["start"] = start + first
        result["first"] = first
        status, body, component_first = get(port, "/fn/v1/component", auth)
        if status != 201:
            raise SystemExit(f"reactor component: {status} {body!r}")
        component = load(port, "/fn/v1/component", seconds, [f"apikey: {key}"])
        component["first invocation"] = component_first
        warm = load(port, "/fn/v1/warm", seconds, [f"apikey: {key}"])
        ceiling = load(port, "/fn/v1", seconds, [f"apikey: {keys['service']}"])
        # A change in dev: the new code's first invocation, and write → served.
        with open(source, "w") as f:
            f.write(HANDLER_TS.replace('"world"', '"again"'))
        written = time.perf_counter()
        until_ok(port, "/healthz")
        while True:
            status, body, took = get(port, "/fn/v1/hello", auth)
            if b"again" in body:
                break
            time.sleep(0.001)
        result["reload"] = time.perf_counter() - written
        # The request that first saw the new code paid its cold start; measure it once more on
        # a fresh change, from the moment the reload is visible.
        result["reload first"] = took
        return result, warm, ceiling, component
    finally:
        server.stop()


def bench_peer(cmd, port, seconds, **kw):
    """Starts a peer server, times process start → first 200, then loads it."""
    started = time.perf_counter()
    server = Process(cmd, **kw)
    try:
        until_ok(port, "/fn/v1/hello")
        start = time.perf_counter() - started
        result = load(port, "/fn/v1/hello", seconds)
        result["start"] = start
        return result
    finally:
        server.stop()


def bench_deno(deno, seconds, tmp):
    script = os.path.join(tmp, "deno.js")
    with open(script, "w") as f:
        f.write(DENO_JS)
    port = free_port()
    env = dict(os.environ, DENO_DIR=os.path.join(CACHE, "deno-dir"), DENO_NO_UPDATE_CHECK="1", NO_COLOR="1")
    return bench_peer([deno, "run", "--allow-net", script, str(port)], port, seconds, env=env)


def bench_workerd(workerd, seconds, tmp):
    directory = os.path.join(tmp, "workerd")
    os.makedirs(directory)
    port = free_port()
    with open(os.path.join(directory, "worker.js"), "w") as f:
        f.write(HANDLER_JS)
    with open(os.path.join(directory, "config.capnp"), "w") as f:
        f.write(WORKERD_CAPNP.replace("PORT", str(port)))
    return bench_peer([workerd, "serve", "config.capnp"], port, seconds, cwd=directory)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "10")))
    parser.add_argument("--only", default="reactor,deno,workerd")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    wanted = args.only.split(",")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        deno, workerd = npm_peers() if {"deno", "workerd"} & set(wanted) else (None, None)
        if "reactor" in wanted:
            fresh, warm, ceiling, component = bench_reactor(build_reactor(), args.seconds, tmp)
            results["Reactor, per request"] = fresh
            results["Reactor, instance"] = warm
            results["Reactor, component"] = component
            results["Reactor, no handler"] = ceiling
        if "deno" in wanted:
            results["Deno"] = bench_deno(deno, args.seconds, tmp)
        if "workerd" in wanted:
            results["workerd"] = bench_workerd(workerd, args.seconds, tmp)

    print(f"\n{'target':20} {'load':6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'× Deno':>7} {'× workerd':>9}")
    for target, r in results.items():
        for name in ("warm", "c1"):
            w = r[name]
            ratios = []
            for peer in ("Deno", "workerd"):
                p = results.get(peer)
                ratios.append(f"{w['rps'] / p[name]['rps']:.2f}" if p and peer != target else "")
            print(f"{target:20} {name:6} {w['rps']:>9.0f} {w['p50']:>8.3f} {w['p99']:>8.2f} {ratios[0]:>7} {ratios[1]:>9}")
    print()
    for target, r in results.items():
        if "first invocation" in r:
            print(f"{target:20} first invocation after load {r['first invocation'] * 1000:.2f} ms")
        if "start" not in r:
            continue
        line = f"{target:20} process start → first 200: {r['start'] * 1000:.1f} ms"
        if "first" in r:
            line += f"; first invocation after load {r['first'] * 1000:.2f} ms"
            line += f"; after a change: first invocation {r['reload first'] * 1000:.2f} ms,"
            line += f" write → served {r['reload'] * 1000:.0f} ms (500 ms poll)"
        print(line)
    print("\nwarm: wrk -t2 -c64; c1: wrk -t1 -c1; all over loopback on this machine.")
    print("Reactor per request: a fresh context for every request (the default, nothing leaks);")
    print("Reactor instance: isolation = \"instance\", one loaded context per worker, like Deno and workerd.")
    print("Reactor no handler: GET /fn/v1 (the function list) through the same server and key check:")
    print("  the ceiling any handler's throughput stays under on this machine.")


if __name__ == "__main__":
    main()
