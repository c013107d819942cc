"""Score a preference dataset with a family: every row gets `chosen_rewards` / `rejected_rewards`.

The output is canonical rows (prompt, chosen, rejected, meta/margin when present) plus K
floats per side, member order as in the family manifest, ready for `robustpo train` with
`distill`, `distill_soft` and `e_dpo`.

Reward scale. Distillation regresses β·h onto Δr = r(w) − r(l) (`distill`, `e_dpo`) or
matches σ(Δr / T) (`distill_soft`), so the *scale* of r sets how hard the policy is pushed:
a reward model whose Δr runs to ±20 asks for log-ratio gaps of 20/β nats. BT fixes r only up
to an additive constant and its scale comes from how confidently it was fitted, which
differs between members. `normalize: standardize` maps each member k to
r'_k = (r_k − μ_k) / σ_k, with μ_k, σ_k the mean and standard deviation of member k's
rewards over all 2N responses of this dataset (chosen and rejected pooled), so every member
speaks in the same units; Δr'_k = Δr_k / σ_k (the shift cancels in every objective). The
same (μ_k, σ_k) are applied to chosen and rejected, and are saved in OUT.meta.json; pass
`stats_from=OTHER.meta.json` to apply a previous run's statistics (e.g. train-set
statistics to an evaluation set) instead of recomputing them.

Resume. Raw rewards are appended one flushed line per row to `OUT.partial` (first line: a
fingerprint of the family, the data and the settings); a killed run reruns, skips the rows
already there, and never scores a row twice. The final OUT is written whole and atomically
only when every row is scored, then `OUT.partial` is removed. Normalization happens at that
last step, from the raw rewards of every row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from robustpo.errors import ConfigError, RobustpoError

NORMALIZE = ("none", "standardize")
KEEP_FIELDS = ("prompt", "chosen", "rejected", "meta", "margin", "reference_samples")


@dataclass
class ScoreResult:
    out_path: Path
    rows: int
    scored_now: int       # rows scored by this call (the rest came from an interrupted run)
    members: list[str]
    stats: dict | None    # {"mean": [K], "std": [K]} when standardized


def _paths(out_path: Path) -> tuple[Path, Path]:
    return out_path.with_name(out_path.name + ".partial"), out_path.with_name(out_path.name + ".meta.json")


def _input_fingerprint(in_path) -> str:
    from robustpo.data.io import file_fingerprint

    p = Path(in_path)
    return file_fingerprint(p) if p.exists() else str(in_path)


def _partial_matches(partial_path: Path, key: str) -> bool:
    try:
        with open(partial_path, encoding="utf-8") as f:
            return json.loads(f.readline()).get("fingerprint") == key
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def _read_stats(path, names: list[str]) -> dict:
    try:
        meta = json.loads(Path(path).read_text())
        stats = meta["stats"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: cannot read normalization statistics ({e})") from None
    if meta.get("members") != names:
        raise ConfigError(f"{path}: statistics are for members {meta.get('members')}, this family has {names}")
    return stats


def standardize_stats(chosen: torch.Tensor, rejected: torch.Tensor, names: list[str]) -> dict:
    """Per-member mean and standard deviation over all 2N rewards. chosen, rejected: (N, K)."""
    pooled = torch.cat([chosen, rejected]).double()                    # (2N, K)
    mean, std = pooled.mean(dim=0), pooled.std(dim=0, unbiased=False)  # (K,), (K,)
    for k, s in enumerate(std.tolist()):
        if not s > 1e-12:
            raise RobustpoError(f"member '{names[k]}' gives the same reward to every response: it cannot be "
                                "standardized (and carries no preference)")
    return {"mean": mean.tolist(), "std": std.tolist()}


def score_dataset(family, in_path, out_path, *, normalize: str = "none", stats_from=None, batch_size: int = 32,
                  fmt: str = "auto", split: str | None = None, drop_empty: bool = False, overwrite: bool = False,
                  progress: bool = True) -> ScoreResult:
    """Write `in_path`'s pairs with K rewards per response to `out_path` (JSONL). Resumable.

    family: a folder (family or single reward model) or a loaded `RewardFamily`.
    """
    from tqdm.auto import tqdm

    from robustpo.data.io import AppendOnlyJsonl, fingerprint, write_json_atomic, write_jsonl_atomic
    from robustpo.data.schema import load_preferences
    from robustpo.rewards.family import load_family

    if normalize not in NORMALIZE:
        raise ConfigError(f"normalize must be one of {', '.join(NORMALIZE)}, got '{normalize}'")
    if stats_from is not None and normalize != "standardize":
        raise ConfigError("stats_from (--stats-from) applies saved statistics, so it needs normalize=standardize")
    out_path = Path(out_path)
    partial_path, meta_path = _paths(out_path)
    if Path(in_path).resolve() == out_path.resolve():
        raise ConfigError(f"{out_path}: the output would overwrite the input; choose another --out")
    # Bad rows fail here, naming file/row/field, before any model is loaded or anything written.
    rows, report = load_preferences(str(in_path), split=split, fmt=fmt, drop_empty=drop_empty)
    if isinstance(family, (str, Path)):
        family = load_family(family, batch_size=batch_size)
    names = family.names
    stats = _read_stats(stats_from, names) if stats_from is not None else None
    key = fingerprint("score-v1", family.fingerprint(), _input_fingerprint(in_path), fmt, split, drop_empty)
    settings = {"fingerprint": key, "normalize": normalize, "stats_from": str(stats_from) if stats_from else None}

    if out_path.exists() and not overwrite:
        try:
            previous = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = {}
        if all(previous.get(k) == v for k, v in settings.items()):
            return ScoreResult(out_path, len(rows), 0, names, previous.get("stats"))
        if not _partial_matches(partial_path, key):  # else: killed while finishing; finish again
                raise ConfigError(f"{out_path} already exists (from other data, family or settings): pass --overwrite "
                              "to replace it, or choose another --out")
    if overwrite and partial_path.exists():
        partial_path.unlink()

    with AppendOnlyJsonl(partial_path) as log:
        if log.rows and log.rows[0].get("fingerprint") != key:
            raise ConfigError(f"{partial_path} holds an interrupted scoring of other data or another family; "
                              "pass --overwrite to discard it")
        if not log.rows:
            log.append({"fingerprint": key, "members": names, "input": str(in_path)})
        done = {r["row"]: r for r in log.rows[1:]}
        todo = [i for i in range(len(rows)) if i not in done]
        bar = tqdm(total=len(rows), initial=len(done), desc="score", unit="pair", disable=not progress,
                   dynamic_ncols=True)
        # Rows go through the model `batch_size` pairs at a time; each is logged once its batch is scored.
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            prompts = [rows[i]["prompt"] for i in chunk]
            responses = [rows[i]["chosen"] for i in chunk] + [rows[i]["rejected"] for i in chunk]
            file_rows = [rows[i]["index"] + 1 for i in chunk]
            r = family.score(prompts + prompts, responses, row_ids=file_rows + file_rows)   # (2b, K)
            for j, i in enumerate(chunk):
                entry = {"row": i, "chosen": r[j].tolist(), "rejected": r[len(chunk) + j].tolist()}
                log.append(entry)
                done[i] = entry
            bar.update(len(chunk))
        bar.close()

    chosen = torch.tensor([done[i]["chosen"] for i in range(len(rows))], dtype=torch.float64)      # (N, K)
    rejected = torch.tensor([done[i]["rejected"] for i in range(len(rows))], dtype=torch.float64)  # (N, K)
    if chosen.shape[1] != len(names):
        raise RobustpoError(f"{partial_path}: rows hold {chosen.shape[1]} rewards, the family has {len(names)}")
    if normalize == "standardize":
        stats = stats or standardize_stats(chosen, rejected, names)
        mean, std = torch.tensor(stats["mean"], dtype=torch.float64), torch.tensor(stats["std"], dtype=torch.float64)
        chosen, rejected = (chosen - mean) / std, (rejected - mean) / std
    else:
        stats = None

    def out_rows():
        for i, row in enumerate(rows):
            out = {k: row[k] for k in KEEP_FIELDS if k in row}
            out["chosen_rewards"], out["rejected_rewards"] = chosen[i].tolist(), rejected[i].tolist()
            yield out

    write_jsonl_atomic(out_path, out_rows())
    write_json_atomic(meta_path, {**settings, "family": family.name, "members": names, "input": str(in_path),
                                  "rows": len(rows), "data": report.summary(), "stats": stats})
    partial_path.unlink(missing_ok=True)
    return ScoreResult(out_path, len(rows), len(todo), names, stats)
