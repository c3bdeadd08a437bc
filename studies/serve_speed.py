"""
serve.py's aggregate speed with concurrent streams: tokens/s of all streams together at 1, 8 and 32 at once, for
this checkout's serve.py and, beside it, the serve.py of an earlier commit (--before), both serving the same runs,
measured in turn in one run so the machine's drift falls on both alike.

    python studies/serve_speed.py --runs=out-demo,out-demo-bdh --before=0858b49

The earlier commit's code is taken with `git archive` into a temporary folder; its serve.py must be able to load
the runs (runs trained before the change, or by that commit). Every request streams max_tokens tokens at most, its
own seed, temperature 1; a stream that ends at end-of-text earlier counts the tokens it made.
"""

import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configurator import configure  # noqa: E402

# -----------------------------------------------------------------------------
runs = "out-demo,out-demo-bdh"  # run folders, each measured on its own
before = ""  # a commit whose serve.py to measure beside this one ('' : this one only)
streams = "1,8,32"
max_tokens = 64
rounds = 2  # each (version, count) this many times, in turn; the best round counts
threads = 2  # torch threads of each server
# -----------------------------------------------------------------------------
configure(globals())


def start(folder, out_dir):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, os.path.join(folder, "serve.py"), f"--out_dir={out_dir}", "--port=0",
                             "--device=cpu", "--dtype=float32", "--max_tokens_limit=4096"], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:
        if m := re.search(r"serving .* at http://127\.0\.0\.1:(\d+)", line):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # drain its log
            return proc, int(m.group(1))
    raise SystemExit(f"{folder}/serve.py did not start")


def one(port, seed, counts):
    """One streamed request; appends its completion tokens to counts, or -1 where the connection failed (the server
    reset it or refused it: what a burst did to serve.py before it had a listen backlog for one)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        body = {"prompt": "Once upon a time", "max_tokens": max_tokens, "seed": seed, "stream": True,
                "stream_options": {"include_usage": True}}
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise SystemExit(f"status {response.status}: {response.read()[:300]}")
        for line in response:
            if line.startswith(b"data: {"):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    counts.append(usage["completion_tokens"])
        conn.close()
    except OSError:
        counts.append(-1)


def aggregate(port, n):
    """Tokens per second of n streams started together, from the first request to the last stream's end."""
    counts = [[] for _ in range(n)]
    threads_ = [threading.Thread(target=one, args=(port, seed, counts[seed])) for seed in range(n)]
    t0 = time.perf_counter()
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    failed = sum(1 for c in counts if not c or c[0] < 0)
    return sum(c[0] for c in counts if c and c[0] > 0) / (time.perf_counter() - t0), failed


if __name__ == "__main__":
    folders = {"this": REPO}
    tmp = tempfile.TemporaryDirectory()
    if before:
        archive = subprocess.run(["git", "-C", REPO, "archive", before], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp.name], input=archive, check=True)
        folders = {f"before ({before})": tmp.name, **folders}
    counts = [int(n) for n in streams.split(",")]
    table = {}
    for out_dir in runs.split(","):
        servers = {name: start(folder, os.path.abspath(out_dir)) for name, folder in folders.items()}
        for _, port in servers.values():
            aggregate(port, 2)  # warm
        best, failed = {}, {}
        for _ in range(rounds):
            for n in counts:
                for name, (_, port) in servers.items():
                    speed, lost = aggregate(port, n)
                    best[name, n] = max(best.get((name, n), 0.0), speed)
                    failed[name, n] = failed.get((name, n), 0) + lost
        for proc, _ in servers.values():
            proc.terminate()
        table[out_dir] = best
        print(f"{out_dir} ({threads} threads per server, {max_tokens} tokens per stream at most):")
        for name in folders:
            row = "  ".join(f"{n} streams {best[name, n]:7.1f} tok/s ({best[name, n] / best[name, 1]:.1f}x"
                            f"{f', {failed[name, n]} reset' if failed[name, n] else ''})" for n in counts)
            print(f"  {name:<20} {row}")
    print(json.dumps({run: {f"{name} x{n}": round(v, 1) for (name, n), v in best.items()}
                      for run, best in table.items()}))
