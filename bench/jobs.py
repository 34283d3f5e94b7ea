#!/usr/bin/env python3
"""Jobs throughput and latency against Graphile Worker, on the same Postgres, in one run.

Two workloads for each side:
  throughput  N no-op jobs enqueued at once in one SQL statement (Reactor: rows of
              reactor.job_runs; Graphile Worker: graphile_worker.add_jobs), timed from the
              enqueue until the last one has run: jobs/s.
  latency     jobs enqueued one by one through each side's own API (Reactor: POST
              /jobs/v1/<job>/runs; Graphile Worker: add_job) at a steady rate below capacity:
              enqueue-to-start p50 and p99.

The job is a no-op in both: Reactor runs a TypeScript function (`() => new Response("ok")`)
in its QuickJS sandbox — a fresh one per run (the default) and, in a second pass, one kept per
worker (`isolation = "instance"`, as Node keeps Graphile Worker's); Graphile Worker a
JavaScript task in Node. Both run 32 at once.

Usage: bench/jobs.py [--jobs N] [--rate R] [--only reactor,graphile]
Needs: cargo, node/npm, psql, Postgres on 127.0.0.1:5432.
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

from common import CACHE, Process, build_reactor, free_port, run, wait_http

PG = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
CONCURRENCY = 32

GRAPHILE_RUNNER = r"""
import { run, Logger } from "graphile-worker";
const [connectionString, mode, expected] = process.argv.slice(2);
const latencies = [];
let done = 0;
const runner = await run({
  connectionString,
  concurrency: %d,
  noHandleSignals: true,
  pollInterval: 1000,
  logger: new Logger(() => () => {}),
  taskList: {
    noop: async (payload) => {
      if (payload.t) latencies.push(Date.now() - payload.t);
      done++;
    },
  },
});
console.log("ready");
const check = setInterval(() => {
  if (done >= Number(expected)) {
    clearInterval(check);
    latencies.sort((a, b) => a - b);
    const pct = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : null;
    console.log(JSON.stringify({ done, p50: pct(0.5), p99: pct(0.99) }));
    runner.stop().then(() => process.exit(0));
  }
}, 20);
""" % CONCURRENCY


def psql(url, sql):
    return run(["psql", url, "-Atqc", sql]).stdout.strip()


def fresh_db(name):
    admin = f"{PG}/postgres"
    run(["psql", admin, "-qc", f"drop database if exists {name}"])
    run(["psql", admin, "-qc", f"create database {name}"])
    return f"{PG}/{name}"


def wait_until(check, timeout=600, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(interval)
    raise SystemExit("timed out")


def pace(rate, count, send):
    """Calls send(i) `count` times at `rate` per second."""
    start = time.perf_counter()
    for i in range(count):
        target = start + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(i)


def bench_reactor(release, jobs, rate, tmp, isolation):
    url = fresh_db("reactor_bench_jobs")
    project = os.path.join(tmp, f"reactor-{isolation}")
    os.makedirs(os.path.join(project, "functions", "noop"))
    with open(os.path.join(project, "reactor.toml"), "w") as f:
        f.write('project_id = "bench-jobs-0001"\nname = "Bench"\n\n'
                f'[[functions]]\nname = "noop"\nsource = "functions/noop"\nisolation = "{isolation}"\n\n'
                '[[jobs]]\nname = "noop"\nfunction = "noop"\ntrigger = { type = "queue" }\n')
    with open(os.path.join(project, "functions", "noop", "index.ts"), "w") as f:
        f.write('export default () => new Response("ok");\n')
    config = os.path.join(tmp, "reactor-server.toml")
    with open(config, "w") as f:
        f.write(f"[jobs]\nworkers = {CONCURRENCY}\n")
    server_bin = os.path.join(release, "reactor-server")
    env = dict(os.environ, REACTOR_DATABASE_URL=url, REACTOR_LOG="warn", REACTOR_PROJECT=project,
               REACTOR_CONFIG=config, REACTOR_STORAGE_PATH=os.path.join(tmp, "objects"))
    key = run([server_bin, "keys", "create", "--tier", "svc", "--name", "bench"], env=env).stdout.strip()
    port = free_port()
    server = Process([server_bin, "serve"], env=dict(env, REACTOR_LISTEN=f"127.0.0.1:{port}"))
    try:
        wait_http(port, "/healthz")
        start_ms = time.time() * 1000
        psql(url, f"""
            insert into reactor.job_runs (id, job, status, trigger, payload, max_attempts, run_at, created_at)
            select gen_random_uuid(), 'noop', 'queued', '{{"type":"queue"}}', jsonb_build_object('i', i), 3,
                   (extract(epoch from clock_timestamp()) * 1000)::bigint,
                   (extract(epoch from clock_timestamp()) * 1000)::bigint
            from generate_series(1, {jobs}) i;
            select pg_notify('reactor_jobs', 'noop');""")
        # Polled through the index of unfinished runs, twice a second: a count over every row
        # each 50 ms took a good part of a core from the server being measured. The end is the
        # last run's own finishing time, so the polling interval does not add to it.
        wait_until(lambda: psql(url, "select not exists (select 1 from reactor.job_runs "
                                     "where status in ('queued', 'running'))") == "t", interval=0.5)
        elapsed = (float(psql(url, "select max(finished_at) from reactor.job_runs")) - start_ms) / 1000
        failed = psql(url, "select count(*) from reactor.job_runs where status <> 'succeeded'")
        psql(url, "delete from reactor.job_runs")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        count = rate * 5

        def send(i):
            conn.request("POST", "/jobs/v1/noop/runs", json.dumps({"i": i}),
                         {"apikey": key, "content-type": "application/json"})
            res = conn.getresponse()
            res.read()
            if res.status != 201:
                raise SystemExit(f"enqueue: {res.status}")

        pace(rate, count, send)
        wait_until(lambda: psql(url, "select count(*) from reactor.job_runs where status = 'succeeded'") == str(count))
        p50, p99 = psql(url, """
            select percentile_cont(0.5) within group (order by started_at - created_at),
                   percentile_cont(0.99) within group (order by started_at - created_at)
            from reactor.job_runs""").split("|")
        return {"jobs/s": jobs / elapsed, "failed": int(failed), "p50": float(p50), "p99": float(p99)}
    finally:
        server.stop()


def graphile_prefix():
    prefix = os.path.join(CACHE, "npm-graphile")
    if not os.path.exists(os.path.join(prefix, "node_modules", "graphile-worker")):
        print("installing graphile-worker from npm…", file=sys.stderr)
        os.makedirs(prefix, exist_ok=True)
        run(["npm", "install", "--prefix", prefix, "--no-audit", "--no-fund", "graphile-worker@0.18.0"])
    return prefix


def bench_graphile(jobs, rate, tmp):
    url = fresh_db("graphile_bench_jobs")
    prefix = graphile_prefix()
    script = os.path.join(prefix, "bench-runner.mjs")
    with open(script, "w") as f:
        f.write(GRAPHILE_RUNNER)
    run(["npx", "--prefix", prefix, "graphile-worker", "-c", url, "--schema-only"], cwd=prefix)

    def worker(expected):
        proc = subprocess.Popen(["node", script, url, "run", str(expected)], cwd=prefix,
                                stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise SystemExit(f"graphile-worker did not start: {line}")
        return proc

    proc = worker(jobs)
    start = time.perf_counter()
    psql(url, f"""
        select graphile_worker.add_jobs(array_agg(row('noop', json_build_object('i', i), null, null, null, null, null, null)::graphile_worker.job_spec))
        from generate_series(1, {jobs}) i""")
    out = json.loads(proc.stdout.readline())
    elapsed = time.perf_counter() - start
    proc.wait()
    count = rate * 5
    proc = worker(count)
    conn = subprocess.Popen(["psql", url, "-Aqt"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)

    def send(i):
        conn.stdin.write(f"select graphile_worker.add_job('noop', json_build_object('i', {i}, 't', "
                         f"(extract(epoch from clock_timestamp()) * 1000)::bigint));\n")
        conn.stdin.flush()

    pace(rate, count, send)
    conn.stdin.close()
    conn.wait()
    lat = json.loads(proc.stdout.readline())
    proc.wait()
    return {"jobs/s": jobs / elapsed, "failed": jobs - out["done"], "p50": lat["p50"], "p99": lat["p99"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--only", default="reactor,graphile")
    args = parser.parse_args()
    wanted = args.only.split(",")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "reactor" in wanted:
            release = build_reactor()
            # A fresh sandbox per run (the default), and one kept per worker (isolation = "instance").
            results["Reactor, isolation=request"] = bench_reactor(release, args.jobs, args.rate, tmp, "request")
            results["Reactor, isolation=instance"] = bench_reactor(release, args.jobs, args.rate, tmp, "instance")
        if "graphile" in wanted:
            results["Graphile Worker 0.18"] = bench_graphile(args.jobs, args.rate, tmp)
    peer = results.get("Graphile Worker 0.18")
    print(f"\n{'target':30} {'jobs/s':>10} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8} {'× GW':>6}")
    for target, r in results.items():
        ratio = f"{r['jobs/s'] / peer['jobs/s']:.2f}" if peer and r is not peer else ""
        print(f"{target:30} {r['jobs/s']:>10.0f} {r['failed']:>7} {r['p50']:>8.1f} {r['p99']:>8.1f} {ratio:>6}")
    print(f"\nthroughput: {args.jobs} no-op jobs enqueued in one statement, {CONCURRENCY} at once;"
          f" latency: {args.rate}/s for 5 s through each side's API, enqueue to start.")


if __name__ == "__main__":
    main()
