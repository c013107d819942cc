"""A real OpenAI-compatible chat-completions server for the HTTP judge tests.

Run as a separate process: `python chat_server.py` binds 127.0.0.1 on a free port and
prints the port. The judged "truth" is simple and independent of the judge code: the
longer of the two responses shown is better. Behaviour per request is scripted over HTTP:

    POST /control {"queue": [actions...], "default": action, "delay": seconds, "location": URL}
    GET  /stats   -> {"requests": n, "max_in_flight": most "slow" requests at once,
                      "log": [{"t": time, "action": a, "method": m, "path": p, "auth": Authorization or null}, ...]}

Any other GET is logged as a request too (a client that follows a 302 comes back with GET).

Actions: ok (text reply "A"/"B"), logprobs (reply + top_logprobs with P(better)=0.8),
always_a (replies "A" whatever the texts: position bias), garbage (no verdict in the
text), 400, 500, 503 (HTTP errors), 429 (with Retry-After: `delay`), bad_json (200 with a non-JSON body), timeout and slow
(sleep `delay`, then answer like ok), close (drops the connection without a reply),
429date (Retry-After as an HTTP date `delay` seconds ahead), trickle (the headers, then a
1,000-byte body one byte every `delay` s), trickle_head (the status line itself one byte
every `delay` s), redirect (302 to `location`), echo400 (400 whose body repeats the request's
path and Authorization header, as a careless server might).
"""

import email.utils
import json
import math
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"queue": [], "default": "ok", "delay": 3.0, "location": None, "requests": 0, "log": [], "in_flight": 0,
         "max_in_flight": 0}
LOCK = threading.Lock()
PATTERN = re.compile(r"\[Response A\]\n(.*?)\n\n\[Response B\]\n(.*?)\n\nWhich", re.S)


def completion(text, logprobs=None):
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {"id": "cmpl-test", "object": "chat.completion", "model": "judge", "choices": [choice]}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, code, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, action):
        STATE["requests"] += 1
        STATE["log"].append({"t": time.time(), "action": action, "method": self.command, "path": self.path,
                             "auth": self.headers.get("Authorization")})

    def do_GET(self):
        with LOCK:
            if self.path != "/stats":
                self._record("get")
            self._send(200, {"requests": STATE["requests"], "log": STATE["log"],
                             "max_in_flight": STATE["max_in_flight"]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/control":
            with LOCK:
                STATE.update(queue=list(body.get("queue", [])), default=body.get("default", "ok"),
                             delay=body.get("delay", 3.0), location=body.get("location"), requests=0, log=[],
                             max_in_flight=0)
            return self._send(200, {"ok": True})
        with LOCK:
            action = STATE["queue"].pop(0) if STATE["queue"] else STATE["default"]
            self._record(action)
            delay = STATE["delay"]
            # Only "slow" requests count: a timed-out request of an earlier test may still sleep here.
            if action == "slow":
                STATE["in_flight"] += 1
                STATE["max_in_flight"] = max(STATE["max_in_flight"], STATE["in_flight"])
        try:
            self._answer(action, delay, body)
        finally:
            if action == "slow":
                with LOCK:
                    STATE["in_flight"] -= 1

    def _answer(self, action, delay, body):
        if action == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if action == "trickle":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            return self._drip(b" " * 1000, delay)
        if action == "trickle_head":
            return self._drip(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"X-Pad: " + b"x" * 1000, delay)
        if action == "redirect":
            self.send_response(302)
            self.send_header("Location", STATE["location"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if action == "echo400":
            return self._send(400, {"error": {"message": f"bad request to {self.path} with "
                                                         f"{self.headers.get('Authorization')}"}})
        if action == "429date":
            data = json.dumps({"error": {"message": "slow down"}}).encode()
            self.send_response(429)
            self.send_header("Retry-After", email.utils.formatdate(time.time() + delay, usegmt=True))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if action in ("timeout", "slow"):
            time.sleep(delay)
            action = "ok"
        if action == "429":  # rate limited, with a Retry-After of `delay` seconds
            data = json.dumps({"error": {"message": "slow down"}}).encode()
            self.send_response(429)
            self.send_header("Retry-After", str(delay))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if action in ("400", "500", "503"):
            return self._send(int(action), {"error": {"message": f"scripted {action}"}})
        if action == "bad_json":
            return self._send(200, b"<html>gateway</html>", "text/html")
        if action == "garbage":
            return self._send(200, completion("Both responses have merits; I cannot decide."))
        if action == "always_a":
            return self._send(200, completion("A"))
        user = body["messages"][-1]["content"]
        a, b = PATTERN.search(user).groups()
        label = "A" if len(a) > len(b) else "B"
        if action == "logprobs":
            other = "B" if label == "A" else "A"
            top = [{"token": label, "logprob": math.log(0.8)}, {"token": other, "logprob": math.log(0.2)}]
            lp = {"content": [{"token": label, "logprob": math.log(0.8), "top_logprobs": top}]}
            return self._send(200, completion(label, lp))
        return self._send(200, completion(label))

    def _drip(self, data, delay):
        try:
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(delay)
        except OSError:  # the client gave up
            self.close_connection = True


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()
