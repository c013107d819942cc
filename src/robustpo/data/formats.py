"""Input formats -> the canonical preference row.

Canonical row: `prompt`, `chosen`, `rejected` (each a string, or a list of chat messages),
optional `chosen_rewards` / `rejected_rewards` (K floats each), optional `meta`.

Accepted inputs:
- explicit prompt (TRL "standard"): `prompt`, `chosen`, `rejected` strings;
- conversational (TRL "conversational"): `prompt` a list of `{role, content}` messages and
  `chosen` / `rejected` lists of assistant messages; or no `prompt` and two full message
  lists (`messages`-style), the prompt being their shared messages before the last
  assistant turn;
- implicit prompt (HH-RLHF): two full dialogue strings; the prompt is their longest common
  prefix that ends with the last shared "\\n\\nAssistant:" marker.
"""

from __future__ import annotations

from robustpo.errors import DataError

FORMATS = ("explicit", "implicit", "conversational")
ASSISTANT_MARKER = "\n\nAssistant:"
PASSTHROUGH = ("chosen_rewards", "rejected_rewards", "meta", "reference_samples", "margin")


def _is_messages(value) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value) and len(value) > 0


def detect_format(row: dict) -> str:
    """Which input format a row is in (before validation of its contents)."""
    if "prompt" in row:
        if _is_messages(row.get("prompt")) or _is_messages(row.get("chosen")):
            return "conversational"
        return "explicit"
    if _is_messages(row.get("chosen")) or _is_messages(row.get("rejected")):
        return "conversational"
    return "implicit"


def split_implicit(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """HH-RLHF: the prompt is the longest common prefix ending at an Assistant marker.

    Returns (prompt, chosen_response, rejected_response), or None when the texts share no
    marker. The prompt keeps the marker; responses keep their leading space, so
    prompt + response reproduces each original text exactly.
    """
    n = 0
    limit = min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    cut = chosen.rfind(ASSISTANT_MARKER, 0, n)  # the marker must lie wholly inside the shared prefix
    if cut < 0:
        return None
    end = cut + len(ASSISTANT_MARKER)
    return chosen[:end], chosen[end:], rejected[end:]


def _split_messages(chosen: list, rejected: list):
    """Shared leading messages are the prompt; the rest of each list is its response."""
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    # The response starts at the last assistant turn at or after the shared prefix.
    while n > 0 and chosen[n].get("role") != "assistant":
        n -= 1
    return chosen[:n], chosen[n:], rejected[n:]


def to_canonical(row: dict, *, file: str | None, index: int, fmt: str = "auto") -> dict:
    """Convert one input row to the canonical row, or raise DataError naming what is wrong."""
    if not isinstance(row, dict):
        raise DataError(f"expected an object with prompt/chosen/rejected, got {type(row).__name__}",
                        file=file, row=index)
    detected = detect_format(row)
    if fmt != "auto" and fmt != detected:
        raise DataError(f"row looks {detected}, but --format {fmt} was asked for", file=file, row=index)
    for name in ("chosen", "rejected"):
        if name not in row or row[name] is None:
            raise DataError("missing field", file=file, row=index, field=name)
    out = {k: row[k] for k in PASSTHROUGH if k in row and row[k] is not None}
    if detected == "implicit":
        for name in ("chosen", "rejected"):
            if not isinstance(row[name], str):
                raise DataError(f"expected a string, got {type(row[name]).__name__}", file=file, row=index,
                                field=name)
        parts = split_implicit(row["chosen"], row["rejected"])
        if parts is None:
            raise DataError("no 'prompt' field, and chosen/rejected share no '\\n\\nAssistant:' turn to split on "
                            "(implicit-prompt format)", file=file, row=index, field="prompt")
        out["prompt"], out["chosen"], out["rejected"] = parts
    elif detected == "conversational" and "prompt" not in row:
        for name in ("chosen", "rejected"):
            if not _is_messages(row[name]):
                raise DataError("expected a list of {role, content} messages", file=file, row=index, field=name)
        out["prompt"], out["chosen"], out["rejected"] = _split_messages(row["chosen"], row["rejected"])
    else:
        out["prompt"], out["chosen"], out["rejected"] = row.get("prompt"), row["chosen"], row["rejected"]
        if out["prompt"] is None:
            raise DataError("missing field", file=file, row=index, field="prompt")
    out["format"] = detected
    return out
