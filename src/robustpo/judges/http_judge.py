"""An OpenAI-compatible chat-completions endpoint as a pairwise judge (vLLM, TGI, Ollama,
hosted APIs).

Reliability, because judging thousands of pairs over a network is where jobs die:
- at most `concurrency` requests in flight (a thread pool);
- every request has a total wall-clock deadline of `timeout` seconds (connect, send, the
  reply's headers and body together): a watchdog closes the connection when it passes, so a
  server that trickles its reply a byte at a time cannot keep a request alive longer;
- HTTP 408/409/425/429/5xx, timeouts, refused or dropped connections and non-JSON bodies
  are retried with exponential backoff up to `retries` times in a row. Every wait is
  `backoff · 2^attempt`, or the server's Retry-After (seconds or an HTTP date) when that is
  longer, and never longer than `backoff_max`, whatever Retry-After says. Other 4xx (bad
  request, auth) are not retried, since repeating them cannot help;
- the whole command (this judge object) may retry at most `retry_budget` requests in all
  (retriable failures and unreadable replies alike); when it is spent the judge stops with
  a clear message, keeping every verdict it has;
- redirects are never followed, to another origin or the same one: a 3xx is an error naming
  where it pointed, and nothing (no request, no key) is sent there;
- credentials are never printed: the API key (environment variable `api_key_env`, sent as
  `Authorization: Bearer`), a user:password in the URL (sent as HTTP Basic, instead of the
  key), the Authorization header as sent and the values of the URL's query are replaced by
  `***` in every message, even when a server echoes them back;
- replies whose verdict cannot be read are asked again up to `parse_retries` times, then
  counted as a tie (0.5) and recorded as unparsed: a verdict is never guessed;
- every verdict is appended to an on-disk cache (JSONL, one flushed line each) keyed by the
  judge (model, template, labels, system prompt, sampling settings) and the three texts,
  so no comparison is paid for twice, and a run that stops on a dead server keeps
  everything judged before it stopped. The URL is not part of the key: the same model
  moved to another host gives the same verdicts. Unparsed ties are cached too, so that
  reruns agree; delete the cache file to ask again.

Proxies: HTTP_PROXY / HTTPS_PROXY / NO_PROXY from the environment are honoured (https
through a proxy uses a CONNECT tunnel), as urllib does.

Verdict reading: from logprobs when the server returns them (the first label token's
top_logprobs, P(A) / (P(A) + P(B)), used when both labels are among them), else from the
reply text by `parse_verdict`.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import math
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from robustpo.errors import ConfigError
from robustpo.judges.base import TIE, JudgeError, Verdict
from robustpo.judges.lm import render_judge_prompt

DEFAULT_TEMPLATE = (
    "You are comparing two responses to the same prompt.\n\n"
    "[Prompt]\n{prompt}\n\n"
    "[Response A]\n{first}\n\n"
    "[Response B]\n{second}\n\n"
    "Which response is better? Reply with a single letter: A or B."
)

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


def parse_verdict(text: str, labels: tuple[str, str] = ("A", "B")) -> float | None:
    """Read a verdict from reply text: 1.0 (first label), 0.0 (second), 0.5 (explicit tie),
    None (unreadable). Rules, first match wins; a rule that finds both labels is ambiguous
    and yields None rather than a guess:

    1. `[[A]]` / `[[B]]` / `[[tie]]` markers;
    2. the whole reply is a label, ignoring case, spaces, quotes, brackets and punctuation
       ("A", " b.", "**A**", "(B)");
    3. "answer: A", "verdict: B", "... is better: A", "Response A is better";
    4. the reply starts with a label as a word ("A. It is more accurate").
    """
    if not isinstance(text, str):
        return None
    first, second = (lbl.upper() for lbl in labels)

    def verdict(found: set[str]) -> float | None:
        found = {f.upper() for f in found}
        if len(found) != 1:
            return None
        f = found.pop()
        return 1.0 if f == first else 0.0 if f == second else TIE if f == "TIE" else None

    lab = "|".join(re.escape(x) for x in labels)
    markers = set(re.findall(rf"\[\[\s*({lab}|tie)\s*\]\]", text, flags=re.I))
    if markers:
        return verdict(markers)
    bare = re.sub(r"[\s\"'`*()\[\].,:;!]+", "", text)
    if bare.upper() in (first, second):
        return verdict({bare})
    stated = set(re.findall(rf"(?:answer|verdict|choice|better(?: response)?(?: is)?)\s*[:\-]?\s*"
                            rf"(?:response\s+)?[\"'*(\[]*({lab})\b", text, flags=re.I))
    stated |= set(re.findall(rf"\bresponse\s+({lab})\s+is\s+better\b", text, flags=re.I))
    if stated:
        return verdict(stated)
    lead = re.match(rf"^[\s\"'*(\[]*({lab})\b(?![-'])", text, flags=re.I)
    if lead and (len(lead.group(1)) > 1 or lead.group(1).isupper()):
        return verdict({lead.group(1)})
    return None


def verdict_from_logprobs(choice: dict, labels: tuple[str, str]) -> float | None:
    """P(first) from the top_logprobs of the first token that is a label, if both labels appear."""
    content = ((choice.get("logprobs") or {}).get("content")) or []
    wanted = {lbl.upper(): lbl for lbl in labels}
    for tok in content:
        if not isinstance(tok, dict) or str(tok.get("token", "")).strip(" \"'*([").upper() not in wanted:
            continue
        mass = {lbl.upper(): 0.0 for lbl in labels}
        for alt in tok.get("top_logprobs") or []:
            key = str(alt.get("token", "")).strip(" \"'*([").upper()
            if key in mass and isinstance(alt.get("logprob"), (int, float)):
                mass[key] += math.exp(alt["logprob"])
        a, b = mass[labels[0].upper()], mass[labels[1].upper()]
        return a / (a + b) if a > 0 and b > 0 else None
    return None


class VerdictCache:
    """key -> verdict, persisted as append-only JSONL (a torn last line is dropped on reopen)."""

    def __init__(self, path: str | None):
        self._lock = threading.Lock()
        self._data: dict[str, dict] = {}
        self._out = None
        if path:
            from robustpo.data.io import AppendOnlyJsonl

            self._out = AppendOnlyJsonl(path)
            for row in self._out.rows:
                self._data[row["key"]] = row

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, prob: float, raw, parsed: bool) -> None:
        row = {"key": key, "prob": prob, "raw": raw, "parsed": parsed}
        with self._lock:
            self._data[key] = row
            if self._out is not None:
                self._out.append(row)

    def __len__(self) -> int:
        return len(self._data)


def _check_number(name: str, value, *, minimum: float, integer: bool = False, above: bool = False):
    """A judge option as a finite number >= minimum (> minimum when `above`); ConfigError if not."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = value > minimum if above else value >= minimum
    if not ok:
        kind = "a whole number" if integer else "a finite number"
        raise ConfigError(f"judge option {name} must be {kind} {'>' if above else '>='} {minimum:g}, got {value!r}")
    return int(value) if integer else float(value)


def _basic(user: str | None, password: str | None) -> str:
    raw = f"{urllib.parse.unquote(user or '')}:{urllib.parse.unquote(password or '')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class HTTPJudge:
    def __init__(self, url: str, *, model: str = "judge", template: str = DEFAULT_TEMPLATE,
                 labels: tuple[str, str] = ("A", "B"), system: str | None = None, concurrency: int = 4,
                 timeout: float = 60.0, retries: int = 5, backoff: float = 1.0, backoff_max: float = 60.0,
                 parse_retries: int = 2, max_tokens: int = 16, temperature: float = 0.0, logprobs: bool = True,
                 top_logprobs: int = 5, cache: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 retry_budget: int = 1000):
        from robustpo.data.io import fingerprint

        self.concurrency = _check_number("concurrency", concurrency, minimum=1, integer=True)
        self.timeout = _check_number("timeout", timeout, minimum=0, above=True)
        self.retries = _check_number("retries", retries, minimum=0, integer=True)
        self.backoff = _check_number("backoff", backoff, minimum=0)
        self.backoff_max = _check_number("backoff_max", backoff_max, minimum=0)
        self.parse_retries = _check_number("parse_retries", parse_retries, minimum=0, integer=True)
        self.retry_budget = _check_number("retry_budget", retry_budget, minimum=0, integer=True)
        self.max_tokens = _check_number("max_tokens", max_tokens, minimum=1, integer=True)
        self.top_logprobs = _check_number("top_logprobs", top_logprobs, minimum=0, integer=True)
        self.model, self.template, self.labels, self.system = model, template, tuple(labels), system
        self.temperature, self.logprobs = float(temperature), bool(logprobs)
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self._setup_url(url)
        settings = fingerprint(template, self.labels, system, self.max_tokens, self.temperature)
        self.name = f"http:{model}#{settings[:8]}"
        self.cache = VerdictCache(cache)
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

    def _redact(self, text: str) -> str:
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
            raise _Retriable(self._redact(f"{type(e).__name__}: {e}")) from None
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
            raise JudgeError(self._redact(
                f"judge endpoint {self.endpoint} answered HTTP {status}, a redirect to {redact_url(where)}"
                f"{origin}; redirects are never followed, so nothing was sent there: if you trust it, give "
                "that URL as the judge"))
        detail = payload[:200].decode("utf-8", "replace").strip() if status >= 400 else ""
        if status in RETRIABLE_STATUS:
            raise _Retriable(self._redact(f"HTTP {status} {detail}".strip()), _retry_after(headers.get("Retry-After")))
        if not 200 <= status < 300:
            hint = " (if the server does not support logprobs, pass the option logprobs=false)" \
                if status == 400 and "logprobs" in body else ""
            raise JudgeError(self._redact(f"judge endpoint {self.endpoint} refused the request: HTTP {status} "
                                          f"{detail}".strip() + hint))
        try:
            data = json.loads(payload)
            return data["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retriable(self._redact(f"reply is not a chat completion: {payload[:120]!r}")) from None

    def _spend_retry(self) -> bool:
        """Take one retry from the command's budget; False when it is spent."""
        with self._count_lock:
            if self.retries_used >= self.retry_budget:
                return False
            self.retries_used += 1
            return True

    def _budget_spent(self, last: str) -> JudgeUnavailable:
        return JudgeUnavailable(self._redact(
            f"judge endpoint {self.endpoint}: the retry budget of this command is spent ({self.retry_budget} "
            f"retries in all; -J retry_budget=N allows more) (last: {last})"))

    def _judge_one(self, prompt, first, second, stop: threading.Event) -> Verdict:
        text = render_judge_prompt(self.template, prompt, first, second)
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + \
            [{"role": "user", "content": text}]
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": self.temperature}
        if self.logprobs:
            body.update(logprobs=True, top_logprobs=self.top_logprobs)
        failures, unparsed, last_error = 0, 0, ""
        while True:
            if stop.is_set():
                raise _Aborted()
            try:
                choice = self._post(body)
            except _Retriable as e:
                failures, last_error = failures + 1, str(e)
                if failures > self.retries:
                    raise JudgeUnavailable(f"judge endpoint {self.endpoint} failed {failures} times in a row "
                                           f"(last: {last_error})") from None
                if not self._spend_retry():
                    raise self._budget_spent(last_error) from None
                # backoff · 2^k, or longer when the server asks (Retry-After), but never beyond backoff_max.
                wait = self.backoff * 2.0 ** min(failures - 1, 64)
                if e.retry_after is not None:
                    wait = max(wait, e.retry_after)
                # wait() instead of sleep(): wakes at once when another comparison failed for good.
                stop.wait(min(wait, self.backoff_max))
                continue
            failures = 0
            reply = ((choice.get("message") or {}).get("content")) or ""
            prob = verdict_from_logprobs(choice, self.labels) if self.logprobs else None
            source = "logprobs" if prob is not None else "text"
            if prob is None:
                prob = parse_verdict(reply, self.labels)
            if prob is not None:
                return Verdict(prob, raw={"reply": reply, "source": source}, parsed=True)
            unparsed += 1
            if unparsed > self.parse_retries:
                return Verdict(TIE, raw={"reply": reply, "source": "unparsed"}, parsed=False)
            if not self._spend_retry():
                raise self._budget_spent("an unreadable verdict") from None

    # ------------------------------------------------------------------ batches
    def cache_key(self, prompt, first, second) -> str:
        from robustpo.data.io import fingerprint

        return fingerprint(self.name, self.template, prompt, first, second)

    def compare_detailed(self, prompts: list, first: list, second: list) -> list[Verdict]:
        keys = [self.cache_key(p, a, b) for p, a, b in zip(prompts, first, second)]
        todo: dict[str, int] = {}
        for i, k in enumerate(keys):
            if self.cache.get(k) is None and k not in todo:
                todo[k] = i
        if todo:
            self._judge_missing(todo, prompts, first, second)
        out = []
        for k in keys:
            row = self.cache.get(k)
            out.append(Verdict(row["prob"], raw=row["raw"], parsed=row["parsed"]))
        return out

    def _judge_missing(self, todo: dict[str, int], prompts, first, second) -> None:
        stop = threading.Event()
        errors: list[BaseException] = []

        def work(key: str, i: int) -> None:
            try:
                v = self._judge_one(prompts[i], first[i], second[i], stop)
            except _Aborted:
                return
            except BaseException as e:  # noqa: BLE001 - reported below, after the pool drains
                errors.append(e)
                stop.set()
                return
            self.cache.put(key, v.prob, v.raw, v.parsed)  # saved the moment it is known

        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            for future in [pool.submit(work, key, i) for key, i in todo.items()]:
                future.result()
        except BaseException:  # Ctrl-C: stop retrying, drop queued work, keep what is cached
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if errors:
            done = sum(1 for k in todo if self.cache.get(k) is not None)
            cls = type(errors[0]) if isinstance(errors[0], JudgeError) else JudgeError
            raise cls(f"{errors[0]}; {done} of {len(todo)} new comparisons in this batch were judged "
                      f"and {len(self.cache)} verdicts are cached: rerun to continue from there")

    def compare(self, prompts: list, first: list, second: list) -> list[float]:
        return [v.prob for v in self.compare_detailed(prompts, first, second)]
