"""The bounded HTTP transport under the HTTP judge: one chat-completions endpoint, reached
so that a misbehaving server or network can slow a command down but never hang it, loop
it, or make it print a credential.

It owns everything about getting one request's reply: where and how to connect, the
request deadline, retries with backoff and the command's retry budget, refusing
redirects, and redacting secrets. It knows nothing about prompts, verdicts or the cache
(robustpo.judges.http_judge owns those), so each side can be read and changed alone.

Reliability, because judging thousands of pairs over a network is where jobs die:
- every request has a total wall-clock deadline of `timeout` seconds (connect, send, the
  reply's headers and body together): a watchdog closes the connection when it passes, so a
  server that trickles its reply a byte at a time cannot keep a request alive longer;
- HTTP 408/409/425/429/5xx, timeouts, refused or dropped connections and non-JSON bodies
  are retried with exponential backoff up to `retries` times in a row. Every wait is
  `backoff · 2^attempt`, or the server's Retry-After (seconds or an HTTP date) when that is
  longer, and never longer than `backoff_max`, whatever Retry-After says. Other 4xx (bad
  request, auth) are not retried, since repeating them cannot help;
- the whole command (one transport, shared by the judge's threads) may retry at most
  `retry_budget` requests in all (retriable failures, and the judge's re-asks of unreadable
  replies, alike); when it is spent the request stops with a clear message;
- redirects are never followed, to another origin or the same one: a 3xx is an error naming
  where it pointed, and nothing (no request, no key) is sent there;
- credentials are never printed: the API key (sent as `Authorization: Bearer`), a
  user:password in the URL (sent as HTTP Basic, instead of the key), the Authorization
  header as sent and the values of the URL's query are replaced by `***` in every message,
  even when a server echoes them back.

Proxies: HTTP_PROXY / HTTPS_PROXY / NO_PROXY from the environment are honoured (https
through a proxy uses a CONNECT tunnel), as urllib does.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import math
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request

from robustpo.errors import ConfigError
from robustpo.judges.base import JudgeError

RETRIABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_REPLY_BYTES = 16 << 20  # a chat completion is a few KB; a longer reply is not one


class JudgeUnavailable(JudgeError):
    """The endpoint kept failing after every retry (or the command's retry budget is spent)."""


class _Retriable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header value: a number of seconds or an HTTP date.
    None when absent or unreadable; never negative; may be huge (the caller caps it)."""
    if value is None:
        return None
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:  # an HTTP date is GMT
            import datetime

            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def _error_detail(payload: bytes) -> str:
    """An error reply's message: OpenAI and vLLM send {"error": {"message": ...}} (older vLLM
    {"object": "error", "message": ...}); anything else is shown as its first 200 bytes."""
    text = payload[:200].decode("utf-8", "replace").strip()
    try:
        data = json.loads(payload)
    except ValueError:
        return text
    err = data.get("error", data) if isinstance(data, dict) else None
    message = err.get("message") if isinstance(err, dict) else err
    return str(message)[:500].strip() if isinstance(message, str) and message.strip() else text


class _Aborted(Exception):
    """Another comparison already failed for good; stop spending requests."""


def redact_url(url: str) -> str:
    """`url` with any user:password and every query value replaced by ***."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(f"{k}=***" if sep else k for k, sep, _ in (q.partition("=") for q in parts.query.split("&"))
                     ) if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _secrets_of(url: str) -> list[str]:
    """The credential strings inside a URL: user, password, query values (raw and decoded)."""
    parts = urllib.parse.urlsplit(url)
    found = []
    if parts.username:
        found.append(parts.username)
    if parts.password:
        found.append(parts.password)
    for _, sep, value in (q.partition("=") for q in parts.query.split("&")):
        if sep and value:
            found.append(value)
    return [x for s in found for x in {s, urllib.parse.unquote(s)} if len(x) >= 4]


def _basic(user: str | None, password: str | None) -> str:
    raw = f"{urllib.parse.unquote(user or '')}:{urllib.parse.unquote(password or '')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class Transport:
    """POSTs chat-completion requests to one endpoint within the bounds above; thread-safe.
    The options arrive already checked (HTTPJudge checks them, in its own order)."""

    def __init__(self, url: str, *, timeout: float, retries: int, backoff: float, backoff_max: float,
                 retry_budget: int, api_key: str | None):
        self.timeout, self.retries, self.retry_budget = timeout, retries, retry_budget
        self.backoff, self.backoff_max = backoff, backoff_max
        self.api_key = api_key
        self._setup_url(url)
        self.requests_sent = 0  # counted for reports (and tests): cache hits send nothing
        self.retries_used = 0   # requests beyond each comparison's first, for the whole command
        self._count_lock = threading.Lock()

    # ------------------------------------------------------------------ where and how to connect
    def _setup_url(self, url: str) -> None:
        shown = redact_url(url)
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise ConfigError(f"bad judge URL {shown}: {str(e).replace(url, shown)}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"bad judge URL {shown}: expected http://HOST[:PORT]/PATH or https://...")
        self._secrets = _secrets_of(url) + ([self.api_key] if self.api_key else [])
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, port or (443 if self._https else 80)
        path = parts.path.rstrip("/")
        if not path.endswith("/chat/completions"):
            path += "/chat/completions"
        self._target = path + (f"?{parts.query}" if parts.query else "")
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._origin = (parts.scheme, self._host.lower(), self._port)
        self._url = urllib.parse.urlunsplit((parts.scheme, f"{host}:{self._port}" if port else host, path,
                                             parts.query, ""))
        # For messages: never holds a credential (user:password and query values are ***).
        self.endpoint = redact_url(urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")))
        self._headers = {"Content-Type": "application/json"}
        if parts.username is not None or parts.password is not None:  # user:password in the URL
            self._headers["Authorization"] = _basic(parts.username, parts.password)
        elif self.api_key:
            self._headers["Authorization"] = f"Bearer {self.api_key}"
        if "Authorization" in self._headers:  # the header as sent (base64 of user:password) is secret too
            self._secrets.append(self._headers["Authorization"].split(" ", 1)[1])
        self._ssl = ssl.create_default_context() if self._https else None
        self._proxy, proxy_headers = None, {}
        proxy = urllib.request.getproxies_environment().get(parts.scheme)
        if proxy and not urllib.request.proxy_bypass_environment(self._host):
            pp = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
            self._secrets += _secrets_of(proxy)
            self._proxy = (pp.hostname, pp.port or 80)
            if pp.username is not None:
                proxy_headers["Proxy-Authorization"] = _basic(pp.username, pp.password)
                self._secrets.append(proxy_headers["Proxy-Authorization"].split(" ", 1)[1])
        self._proxy_headers = proxy_headers

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, str, dict]:
        """(connection, request target, extra headers), through a proxy when the environment says so."""
        if self._proxy is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            kw = {"context": self._ssl} if self._https else {}
            return cls(self._host, self._port, timeout=timeout, **kw), self._target, {}
        if self._https:  # CONNECT tunnel: the proxy sees only host and port
            conn = http.client.HTTPSConnection(*self._proxy, timeout=timeout, context=self._ssl)
            conn.set_tunnel(self._host, self._port, headers=self._proxy_headers)
            return conn, self._target, {}
        conn = http.client.HTTPConnection(*self._proxy, timeout=timeout)
        return conn, self._url, dict(self._proxy_headers)

    # ------------------------------------------------------------------ one request
    def _exchange(self, data: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
        """POST `data`; (status, headers, body) within the request deadline (self.timeout, in all)."""
        conn, target, extra = self._connection(self.timeout)
        expired = threading.Event()
        connected: list = []  # the socket, kept: http.client drops conn.sock once a reply begins

        def expire() -> None:  # the deadline passed: break whatever read or write is blocked
            expired.set()
            for sock in (*connected, conn.sock):
                if sock is not None:
                    try:
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the raw socket, TLS or not
                    except OSError:
                        pass

        watchdog = threading.Timer(self.timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.connect()
            connected.append(conn.sock)
            if expired.is_set():
                raise TimeoutError("deadline")
            conn.request("POST", target, body=data, headers={**self._headers, **extra})
            resp = conn.getresponse()
            body, size = [], 0
            while chunk := resp.read(1 << 16):
                size += len(chunk)
                if size > MAX_REPLY_BYTES:
                    raise _Retriable(f"reply longer than {MAX_REPLY_BYTES >> 20} MiB: not a chat completion")
                body.append(chunk)
            if expired.is_set():
                raise TimeoutError("deadline")
            return resp.status, resp.headers, b"".join(body)
        except (OSError, http.client.HTTPException, ValueError) as e:
            if expired.is_set():
                raise _Retriable(f"no complete reply within {self.timeout:g} s (the request deadline, "
                                 "option timeout)") from None
            raise _Retriable(self.redact(f"{type(e).__name__}: {e}")) from None
        finally:
            watchdog.cancel()
            conn.close()

    def _post(self, body: dict) -> dict:
        with self._count_lock:
            self.requests_sent += 1
        status, headers, payload = self._exchange(json.dumps(body).encode())
        if 300 <= status < 400:
            where = urllib.parse.urljoin(self._url, headers.get("Location") or "")
            try:
                wp = urllib.parse.urlsplit(where)
                other = (wp.scheme, (wp.hostname or "").lower(), wp.port or (443 if wp.scheme == "https" else 80))
            except ValueError:
                other = None
            origin = "" if other == self._origin else " (another origin)"
            raise JudgeError(self.redact(
                f"judge endpoint {self.endpoint} answered HTTP {status}, a redirect to {redact_url(where)}"
                f"{origin}; redirects are never followed, so nothing was sent there: if you trust it, give "
                "that URL as the judge"))
        detail = _error_detail(payload) if status >= 400 else ""
        if status in RETRIABLE_STATUS:
            raise _Retriable(self.redact(f"HTTP {status} {detail}".strip()), _retry_after(headers.get("Retry-After")))
        if not 200 <= status < 300:
            hint = " (if the server does not support logprobs, pass the option logprobs=false; if it caps " \
                "top_logprobs, as vLLM's --max-logprobs does, pass a smaller top_logprobs)" \
                if status == 400 and "logprobs" in body else ""
            raise JudgeError(self.redact(f"judge endpoint {self.endpoint} refused the request: HTTP {status} "
                                         f"{detail}".strip() + hint))
        try:
            data = json.loads(payload)
            return data["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retriable(self.redact(f"reply is not a chat completion: {payload[:120]!r}")) from None

    # ------------------------------------------------------------------ retries
    def spend_retry(self) -> bool:
        """Take one retry from the command's budget; False when it is spent."""
        with self._count_lock:
            if self.retries_used >= self.retry_budget:
                return False
            self.retries_used += 1
            return True

    def budget_spent(self, last: str) -> JudgeUnavailable:
        return JudgeUnavailable(self.redact(
            f"judge endpoint {self.endpoint}: the retry budget of this command is spent ({self.retry_budget} "
            f"retries in all; -J retry_budget=N allows more) (last: {last})"))

    def post(self, body: dict, stop: threading.Event) -> dict:
        """The first choice of the endpoint's reply to `body`, retrying retriable failures within
        `retries` in a row and the command's budget. Raises _Aborted once `stop` is set."""
        failures, last_error = 0, ""
        while True:
            if stop.is_set():
                raise _Aborted()
            try:
                return self._post(body)
            except _Retriable as e:
                failures, last_error = failures + 1, str(e)
                if failures > self.retries:
                    raise JudgeUnavailable(f"judge endpoint {self.endpoint} failed {failures} times in a row "
                                           f"(last: {last_error})") from None
                if not self.spend_retry():
                    raise self.budget_spent(last_error) from None
                # backoff · 2^k, or longer when the server asks (Retry-After), but never beyond backoff_max.
                wait = self.backoff * 2.0 ** min(failures - 1, 64)
                if e.retry_after is not None:
                    wait = max(wait, e.retry_after)
                # wait() instead of sleep(): wakes at once when another comparison failed for good.
                stop.wait(min(wait, self.backoff_max))
