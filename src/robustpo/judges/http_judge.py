"""An OpenAI-compatible chat-completions endpoint as a pairwise judge (vLLM, TGI, Ollama,
hosted APIs).

This module owns the judging: the request built from the template, reading the verdict
from the reply, the verdict cache, concurrency and the Judge API (compare,
compare_detailed). Getting a reply at all (the request deadline, retries and backoff, the
retry budget, refusing redirects, never printing a credential, proxies) is the bounded
transport's job, in robustpo.judges.transport; it is separate so that those network
guarantees can be read and checked without the judging around them.

Reliability, because judging thousands of pairs over a network is where jobs die (the
transport's guarantees are listed in its own docstring):
- at most `concurrency` requests in flight (a thread pool);
- replies whose verdict cannot be read are asked again up to `parse_retries` times, then
  counted as a tie (0.5) and recorded as unparsed: a verdict is never guessed. Each ask
  again spends one retry from the command's `retry_budget`, shared with the transport's
  retries; when it is spent the judge stops with a clear message, keeping every verdict
  it has;
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

import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor

from robustpo.errors import ConfigError
from robustpo.judges.base import TIE, JudgeError, Verdict
from robustpo.judges.lm import render_judge_prompt
from robustpo.judges.transport import JudgeUnavailable, Transport, _Aborted, _retry_after, redact_url

# JudgeUnavailable, _retry_after and redact_url live in the transport; they are named here
# too because callers (robustpo.judges.load_judge's messages, the tests) import them from here.
__all__ = ["DEFAULT_TEMPLATE", "HTTPJudge", "JudgeUnavailable", "VerdictCache", "parse_verdict", "redact_url",
           "verdict_from_logprobs", "_retry_after"]

DEFAULT_TEMPLATE = (
    "You are comparing two responses to the same prompt.\n\n"
    "[Prompt]\n{prompt}\n\n"
    "[Response A]\n{first}\n\n"
    "[Response B]\n{second}\n\n"
    "Which response is better? Reply with a single letter: A or B."
)


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


class HTTPJudge:
    def __init__(self, url: str, *, model: str = "judge", template: str = DEFAULT_TEMPLATE,
                 labels: tuple[str, str] = ("A", "B"), system: str | None = None, concurrency: int = 4,
                 timeout: float = 60.0, retries: int = 5, backoff: float = 1.0, backoff_max: float = 60.0,
                 parse_retries: int = 2, max_tokens: int = 16, temperature: float = 0.0, logprobs: bool = True,
                 top_logprobs: int = 5, cache: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 retry_budget: int = 1000):
        from robustpo.data.io import fingerprint

        self.concurrency = _check_number("concurrency", concurrency, minimum=1, integer=True)
        timeout = _check_number("timeout", timeout, minimum=0, above=True)
        retries = _check_number("retries", retries, minimum=0, integer=True)
        backoff = _check_number("backoff", backoff, minimum=0)
        backoff_max = _check_number("backoff_max", backoff_max, minimum=0)
        self.parse_retries = _check_number("parse_retries", parse_retries, minimum=0, integer=True)
        retry_budget = _check_number("retry_budget", retry_budget, minimum=0, integer=True)
        self.max_tokens = _check_number("max_tokens", max_tokens, minimum=1, integer=True)
        self.top_logprobs = _check_number("top_logprobs", top_logprobs, minimum=0, integer=True)
        self.model, self.template, self.labels, self.system = model, template, tuple(labels), system
        self.temperature, self.logprobs = float(temperature), bool(logprobs)
        self.transport = Transport(url, timeout=timeout, retries=retries, backoff=backoff, backoff_max=backoff_max,
                                   retry_budget=retry_budget,
                                   api_key=os.environ.get(api_key_env) if api_key_env else None)
        settings = fingerprint(template, self.labels, system, self.max_tokens, self.temperature)
        self.name = f"http:{model}#{settings[:8]}"
        self.cache = VerdictCache(cache)

    @property
    def requests_sent(self) -> int:
        """Requests sent, counted for reports (and tests): cache hits send nothing."""
        return self.transport.requests_sent

    @property
    def retries_used(self) -> int:
        """Requests beyond each comparison's first, for the whole command."""
        return self.transport.retries_used

    # ------------------------------------------------------------------ one comparison
    def _judge_one(self, prompt, first, second, stop: threading.Event) -> Verdict:
        text = render_judge_prompt(self.template, prompt, first, second)
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + \
            [{"role": "user", "content": text}]
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": self.temperature}
        if self.logprobs:
            body.update(logprobs=True, top_logprobs=self.top_logprobs)
        unparsed = 0
        while True:
            choice = self.transport.post(body, stop)  # retries failures itself; _Aborted once stop is set
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
            if not self.transport.spend_retry():
                raise self.transport.budget_spent("an unreadable verdict") from None

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
