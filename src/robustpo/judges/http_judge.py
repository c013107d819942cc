"""An OpenAI-compatible chat-completions endpoint as a pairwise judge (vLLM, TGI, Ollama,
hosted APIs).

Reliability, because judging thousands of pairs over a network is where jobs die:
- at most `concurrency` requests in flight (a thread pool);
- every request has a timeout; HTTP 408/429/5xx, timeouts, refused or dropped
  connections and non-JSON bodies are retried with exponential backoff
  (`backoff · 2^attempt` capped at `backoff_max`, but never shorter than a numeric
  Retry-After header) up to `retries` times; other 4xx
  (bad request, auth) are not retried, since repeating them cannot help;
- replies whose verdict cannot be read are asked again up to `parse_retries` times, then
  counted as a tie (0.5) and recorded as unparsed: a verdict is never guessed;
- every verdict is appended to an on-disk cache (JSONL, one flushed line each) keyed by the
  judge (model, template, labels, system prompt, sampling settings) and the three texts,
  so no comparison is paid for twice, and a run that stops on a dead server keeps
  everything judged before it stopped. The URL is not part of the key: the same model
  moved to another host gives the same verdicts. Unparsed ties are cached too, so that
  reruns agree; delete the cache file to ask again.

Verdict reading: from logprobs when the server returns them (the first label token's
top_logprobs, P(A) / (P(A) + P(B)), used when both labels are among them), else from the
reply text by `parse_verdict`.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

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


class JudgeUnavailable(JudgeError):
    """The endpoint kept failing after every retry."""


class _Retriable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(headers) -> float | None:
    """Seconds from a Retry-After header (429/503), when given as a number."""
    try:
        return max(0.0, float(headers.get("Retry-After"))) if headers is not None else None
    except (TypeError, ValueError):
        return None


class _Aborted(Exception):
    """Another comparison already failed for good; stop spending requests."""


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


class HTTPJudge:
    def __init__(self, url: str, *, model: str = "judge", template: str = DEFAULT_TEMPLATE,
                 labels: tuple[str, str] = ("A", "B"), system: str | None = None, concurrency: int = 4,
                 timeout: float = 60.0, retries: int = 5, backoff: float = 1.0, backoff_max: float = 60.0,
                 parse_retries: int = 2, max_tokens: int = 16, temperature: float = 0.0, logprobs: bool = True,
                 top_logprobs: int = 5, cache: str | None = None, api_key_env: str = "OPENAI_API_KEY"):
        from robustpo.data.io import fingerprint

        self.endpoint = url.rstrip("/")
        if not self.endpoint.endswith("/chat/completions"):
            self.endpoint += "/chat/completions"
        self.model, self.template, self.labels, self.system = model, template, tuple(labels), system
        self.concurrency, self.timeout = max(1, int(concurrency)), float(timeout)
        self.retries, self.backoff, self.backoff_max = int(retries), float(backoff), float(backoff_max)
        self.parse_retries, self.max_tokens, self.temperature = int(parse_retries), int(max_tokens), float(temperature)
        self.logprobs, self.top_logprobs = bool(logprobs), int(top_logprobs)
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        settings = fingerprint(template, self.labels, system, self.max_tokens, self.temperature)
        self.name = f"http:{model}#{settings[:8]}"
        self.cache = VerdictCache(cache)
        self.requests_sent = 0  # counted for reports (and tests): cache hits send nothing
        self._count_lock = threading.Lock()

    # ------------------------------------------------------------------ one request
    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.endpoint, data=json.dumps(body).encode(), headers=headers, method="POST")
        with self._count_lock:
            self.requests_sent += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:200].decode("utf-8", "replace") if e.fp else ""
            if e.code in RETRIABLE_STATUS:
                raise _Retriable(f"HTTP {e.code} {detail}".strip(), _retry_after(e.headers)) from None
            hint = " (if the server does not support logprobs, pass the option logprobs=false)" \
                if e.code == 400 and "logprobs" in body else ""
            raise JudgeError(f"judge endpoint {self.endpoint} refused the request: HTTP {e.code} {detail}".strip()
                             + hint) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", e)
            raise _Retriable(f"{type(reason).__name__}: {reason}") from None
        try:
            data = json.loads(payload)
            return data["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retriable(f"reply is not a chat completion: {payload[:120]!r}") from None

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
                wait = min(self.backoff_max, self.backoff * 2 ** (failures - 1))
                if e.retry_after is not None:  # the server said how long: never come back sooner
                    wait = max(wait, e.retry_after)
                # wait() instead of sleep(): wakes at once when another comparison failed for good.
                stop.wait(wait)
                continue
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
