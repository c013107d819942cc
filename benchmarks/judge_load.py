"""The HTTP judge under load against a server that fails at random (issue 11, item 8).

A chat-completions server runs as its own process on 127.0.0.1 (this file with --serve).
For each request it injects, at random: HTTP 500 (10%), a dropped connection (5%: the
connection is closed with no reply), a garbage body (2%: HTTP 200 and bytes that are not
JSON); every request, faulty or not, first waits a latency drawn uniformly in 0–200 ms. The
draw for the k-th request of a comparison is a hash of (seed, comparison, k), so a seed gives
the same faults whatever the order requests arrive in. A good reply's verdict is the truth
"the longer response is better". Before answering, the server appends one line per request
to its own log (the comparison's texts and the outcome): the log, not the client, says what
was paid for.

The client is `robustpo`'s HTTPJudge at concurrency 32 with an on-disk cache. It judges N
distinct comparisons (2,000; 200 with --quick) in batches as `robustpo rank` sends them,
each batch also repeating comparisons of earlier batches and some of its own (so the cache
and the in-batch de-duplication are part of the load), then a fresh judge over the same
cache judges everything again. Reported (from the server's log unless said otherwise):

- throughput: distinct comparisons per second of the first pass (client wall time);
- requests, and faults by kind, as the server saw them; retries as the client counted them
  (requests = comparisons + retries when every retry reached the server);
- verdicts kept: distinct comparisons whose verdict the client returned;
- lost: comparisons with no verdict in the client's answers, or whose verdict differs from
  the one the server sent (must be 0);
- paid twice: comparisons for which the server returned a verdict more than once (must be 0);
- rerun requests: what the second pass sent (must be 0: all from the cache).

    python benchmarks/judge_load.py                    # 2,000 comparisons; table to stdout
    python benchmarks/judge_load.py --quick --workdir D --json out.json   # what the test suite runs

A full run also writes benchmarks/results/judge_load/results.md and provenance.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "judge_load"
PATTERN = re.compile(r"\[Prompt\]\n(.*?)\n\n\[Response A\]\n(.*?)\n\n\[Response B\]\n(.*?)\n\nWhich", re.S)
FAULTS = (("500", 0.10), ("drop", 0.05), ("garbage", 0.02))
MAX_LATENCY = 0.2


# ----------------------------------------------------------------------------- the server


def draw(seed: int, key: str, k: int) -> tuple[str, float]:
    """(outcome, latency) of the k-th request for comparison `key`."""
    h = hashlib.sha256(f"{seed}|{key}|{k}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    latency = int.from_bytes(h[8:16], "big") / 2**64 * MAX_LATENCY
    edge = 0.0
    for name, p in FAULTS:
        edge += p
        if u < edge:
            return name, latency
    return "verdict", latency


def serve(seed: int, log_path: str) -> None:
    lock = threading.Lock()
    attempts: Counter = Counter()
    in_flight = [0, 0]  # now, most at once
    log = open(log_path, "a", encoding="utf-8")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, code: int, data: bytes, content_type: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # /stats
            with lock:
                self._send(200, json.dumps({"max_in_flight": in_flight[1]}).encode())

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            prompt, first, second = PATTERN.search(body["messages"][-1]["content"]).groups()
            key = json.dumps([prompt, first, second])
            with lock:
                k = attempts[key]
                attempts[key] += 1
                in_flight[0] += 1
                in_flight[1] = max(in_flight)
            outcome, latency = draw(seed, key, k)
            verdict = ("A" if len(first) > len(second) else "B") if outcome == "verdict" else None
            try:
                time.sleep(latency)
                with lock:  # logged before the reply leaves: a verdict sent is a verdict logged
                    log.write(json.dumps({"prompt": prompt, "first": first, "second": second, "k": k,
                                          "outcome": outcome, "verdict": verdict}) + "\n")
                    log.flush()
                if outcome == "500":
                    return self._send(500, b'{"error": {"message": "injected"}}')
                if outcome == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if outcome == "garbage":
                    return self._send(200, b"\x00\x9fgarbage{{{ not json", "text/plain")
                reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": verdict},
                                      "finish_reason": "stop"}]}
                self._send(200, json.dumps(reply).encode())
            finally:
                with lock:
                    in_flight[0] -= 1

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 512  # 32 clients connecting at once must not overflow the backlog

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


# ----------------------------------------------------------------------------- the load


def comparisons(n: int, seed: int) -> list[tuple[str, str, str]]:
    """n distinct (prompt, first, second), the two responses of different lengths."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.sample(range(1, 60), 2)
        out.append((f"prompt {i}", "x" * a, "y" * b))
    return out


def batches(items: list, size: int, seed: int) -> list[list]:
    """Batches of `size` new items, each plus 10% repeats of earlier batches and 5% of its own."""
    rng = random.Random(seed + 1)
    out, seen = [], []
    for start in range(0, len(items), size):
        new = items[start:start + size]
        extra = rng.sample(seen, min(len(seen), max(1, size // 10))) if seen else []
        extra += rng.sample(new, max(1, size // 20))
        batch = new + extra
        rng.shuffle(batch)
        out.append(batch)
        seen += new
    return out


def run(args) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    from robustpo.judges.http_judge import HTTPJudge

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="judge_load."))
    work.mkdir(parents=True, exist_ok=True)
    server_log, cache = work / "server.jsonl", work / "cache.jsonl"
    for p in (server_log, cache):
        p.unlink(missing_ok=True)
    items = comparisons(args.n, args.seed)
    (work / "comparisons.jsonl").write_text("".join(json.dumps(c) + "\n" for c in items))
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--seed", str(args.seed),
                               "--log", str(server_log)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/v1"
        options = dict(concurrency=args.concurrency, timeout=args.timeout, retries=args.retries,
                       backoff=args.backoff, backoff_max=args.backoff_max, logprobs=False, api_key_env=None)
        judge = HTTPJudge(url, cache=str(cache), **options)
        answers: dict[tuple, float] = {}
        t0 = time.perf_counter()
        for batch in batches(items, args.batch, args.seed):
            probs = judge.compare(*map(list, zip(*batch)))
            for c, p in zip(batch, probs):
                answers.setdefault(c, p)
        seconds = time.perf_counter() - t0
        again = HTTPJudge(url, cache=str(cache), **options)  # a rerun: the same cache
        rerun = again.compare(*map(list, zip(*items)))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
            max_in_flight = json.loads(r.read())["max_in_flight"]
    finally:
        server.kill()
        server.wait()
    (work / "verdicts.jsonl").write_text("".join(json.dumps([*c, answers.get(c)]) + "\n" for c in items))

    log = [json.loads(x) for x in server_log.read_text().splitlines()]
    outcomes = Counter(e["outcome"] for e in log)
    sent: dict[tuple, list] = {}
    for e in log:
        if e["outcome"] == "verdict":
            sent.setdefault((e["prompt"], e["first"], e["second"]), []).append(1.0 if e["verdict"] == "A" else 0.0)
    lost = sum(1 for c in items if c not in answers or c not in sent or answers[c] != sent[c][0])
    result = {
        "comparisons": len(items), "concurrency": args.concurrency, "seconds": round(seconds, 2),
        "throughput": round(len(items) / seconds, 1), "requests": len(log),
        "faults_500": outcomes["500"], "faults_drop": outcomes["drop"], "faults_garbage": outcomes["garbage"],
        "retries": judge.retries_used, "verdicts_kept": sum(1 for c in items if c in answers),
        "lost": lost, "paid_twice": sum(1 for v in sent.values() if len(v) > 1),
        "rerun_requests": again.requests_sent, "rerun_agrees": rerun == [answers.get(c) for c in items],
        "max_in_flight": max_in_flight, "workdir": str(work),
        "settings": {k: v for k, v in options.items() if k != "api_key_env"},
    }
    return result


def table(r: dict) -> str:
    rows = [("comparisons (distinct)", r["comparisons"]), ("concurrency (server saw at most)",
            f"{r['concurrency']} ({r['max_in_flight']})"), ("wall time (s)", r["seconds"]),
            ("throughput (comparisons/s)", r["throughput"]), ("requests (server)", r["requests"]),
            ("faults: HTTP 500 / dropped / garbage (server)",
             f"{r['faults_500']} / {r['faults_drop']} / {r['faults_garbage']}"),
            ("retries (client)", r["retries"]), ("verdicts kept", r["verdicts_kept"]), ("lost", r["lost"]),
            ("paid twice (server)", r["paid_twice"]), ("rerun requests (all from the cache)", r["rerun_requests"])]
    return "| measure | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="200 comparisons (the test suite's run)")
    ap.add_argument("--n", type=int, help="distinct comparisons (default 2000; 200 with --quick)")
    ap.add_argument("--batch", type=int, help="new comparisons per batch (default n/8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--retries", type=int, default=8)
    ap.add_argument("--backoff", type=float, default=0.05)
    ap.add_argument("--backoff-max", type=float, default=1.0)
    ap.add_argument("--workdir", help="keep the server log, cache and verdicts here (default: a temp folder)")
    ap.add_argument("--json", help="write the result as JSON here")
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.seed, args.log)
        return 0
    args.n = args.n or (200 if args.quick else 2000)
    args.batch = args.batch or max(1, args.n // 8)
    snap = None
    if not args.quick:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import provenance

        snap = provenance.snapshot()
    r = run(args)
    text = table(r)
    print(text, end="")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1) + "\n")
    if snap is not None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        s = r["settings"]
        (RESULTS / "results.md").write_text(
            f"`python benchmarks/judge_load.py` (seed {args.seed}; judge concurrency {s['concurrency']}, timeout "
            f"{s['timeout']:g} s, retries {s['retries']}, backoff {s['backoff']:g} s capped at "
            f"{s['backoff_max']:g} s):\n\n" + text)
        provenance.write(RESULTS, snap)
    return 0 if r["lost"] == 0 and r["paid_twice"] == 0 and r["rerun_requests"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
