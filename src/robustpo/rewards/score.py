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

Resume. Raw rewards are appended one flushed line per row to `OUT.raw` (first line: a
fingerprint of the family, the data and the settings); a killed run reruns, skips the rows
already there, and never scores a row twice. When every row is scored, normalization runs
over the raw rewards of all of them, OUT.meta.json is written, then the rows go to
`OUT.partial`, which becomes OUT by an atomic rename (data/io.PartialOutput: the one rule by
which every resumable job's OUT appears), and the raw files are removed. OUT's presence
without OUT.partial therefore means its meta is current. `overwrite` keeps an earlier OUT
and its meta until the new ones replace them, so a scoring that fails leaves them as they were.

Several processes. Launched with torchrun or `accelerate launch`, each process scores its
own share of the rows not scored yet (process r takes every world-th of them) into its own
`OUT.raw` (process 0) or `OUT.raw.r`; process 0 then assembles every shard, writes OUT and
records how many rows each process scored in OUT.meta.json. A rerun with any number of
processes reads every shard first, so no row is ever scored twice.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from robustpo.data.collate import pair_layout, split_pairs
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
    """OUT.raw (process 0's raw rewards; process r's are OUT.raw.r) and OUT.meta.json."""
    return out_path.with_name(out_path.name + ".raw"), out_path.with_name(out_path.name + ".meta.json")


def _shards(raw_path: Path) -> list[Path]:
    """Every process's raw-rewards file: OUT.raw (process 0 / single process) and OUT.raw.R."""
    extra = [p for p in raw_path.parent.glob(raw_path.name + ".*") if p.suffix[1:].isdigit()]
    return [p for p in [raw_path, *sorted(extra)] if p.exists()]


def _read_shard(path: Path) -> list[dict]:
    """Complete lines of a raw-rewards file (a torn last line, from a killed writer, is ignored;
    the file is not changed: it may be another process's)."""
    from robustpo.data.io import AppendOnlyJsonl

    return AppendOnlyJsonl.read(path)[0]


class _Processes:
    """This process's rank, the number of processes, and a barrier (all trivial for one process)."""

    def __init__(self):
        self.rank, self.world = 0, int(os.environ.get("WORLD_SIZE", "1"))
        self._state = None
        if self.world > 1:
            from accelerate import PartialState

            # without CUDA, accelerate forms the (gloo) process group only when told cpu=True
            self._state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world = self._state.process_index, self._state.num_processes

    def barrier(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()


def _input_fingerprint(in_path) -> str:
    from robustpo.data.io import file_fingerprint

    p = Path(in_path)
    return file_fingerprint(p) if p.exists() else str(in_path)


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

    family: a folder (family or single reward model) or a loaded `RewardFamily`. OUT is locked
    (`OUT.lock`, robustpo.locks) from the input's validation to the end: a second scoring into
    the same OUT stops at once, naming the first one's pid.
    """
    from robustpo.data.schema import load_preferences
    from robustpo.locks import exclusive_output

    if normalize not in NORMALIZE:
        raise ConfigError(f"normalize must be one of {', '.join(NORMALIZE)}, got '{normalize}'")
    if stats_from is not None and normalize != "standardize":
        raise ConfigError("stats_from (--stats-from) applies saved statistics, so it needs normalize=standardize")
    out_path = Path(out_path)
    if Path(in_path).resolve() == out_path.resolve():
        raise ConfigError(f"{out_path}: the output would overwrite the input; choose another --out")
    # Bad rows fail here, naming file/row/field, before any model is loaded or anything written.
    rows, report = load_preferences(str(in_path), split=split, fmt=fmt, drop_empty=drop_empty)
    procs = _Processes()
    with contextlib.ExitStack() as stack:
        if procs.rank == 0:   # one scoring per OUT at a time (its other processes write only their shards)
            stack.enter_context(exclusive_output(out_path, what="scored output"))
        procs.barrier()
        return _score(family, in_path, out_path, rows, report, procs, normalize=normalize, stats_from=stats_from,
                      batch_size=batch_size, fmt=fmt, split=split, drop_empty=drop_empty, overwrite=overwrite,
                      progress=progress)


def _score(family, in_path, out_path: Path, rows, report, procs, *, normalize, stats_from, batch_size, fmt, split,
           drop_empty, overwrite, progress) -> ScoreResult:
    from tqdm.auto import tqdm

    from robustpo.data.io import AppendOnlyJsonl, PartialOutput, fingerprint, write_json_atomic, write_jsonl_atomic
    from robustpo.rewards.family import load_family

    raw_path, meta_path = _paths(out_path)
    if isinstance(family, (str, Path)):
        family = load_family(family, batch_size=batch_size)
    names = family.names
    stats = _read_stats(stats_from, names) if stats_from is not None else None
    key = fingerprint("score-v1", family.fingerprint(), _input_fingerprint(in_path), fmt, split, drop_empty)
    settings = {"fingerprint": key, "normalize": normalize, "stats_from": str(stats_from) if stats_from else None}

    # Process 0 alone removes files (--overwrite), before the others look at them. An earlier OUT
    # and its meta stay until the new ones replace them: a scoring that fails keeps them.
    output = PartialOutput(out_path, overwrite=overwrite, also=_shards(raw_path), keep_out=True) \
        if procs.rank == 0 else None
    procs.barrier()
    output = output or PartialOutput(out_path)
    if output.finished and not overwrite:   # OUT appears only after its meta: the meta says what OUT holds
        try:
            previous = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = {}
        if not all(previous.get(k) == v for k, v in settings.items()):
            raise ConfigError(f"{out_path} already exists (from other data, family or settings): pass --overwrite "
                              "to replace it, or choose another --out")
        procs.barrier()   # every process has seen OUT before process 0 tidies up
        if procs.rank == 0:
            for shard in _shards(raw_path):   # left by a run killed just after OUT appeared
                shard.unlink()
        return ScoreResult(out_path, len(rows), 0, names, previous.get("stats"))

    # Every process reads every shard before any process appends to its own.
    done: dict[int, dict] = {}
    for shard in _shards(raw_path):
        header, *entries = _read_shard(shard) or [{}]
        if header.get("fingerprint") != key:
            raise ConfigError(f"{shard} holds an interrupted scoring of other data or another family; "
                              "pass --overwrite to discard it")
        done.update((e["row"], e) for e in entries)
    todo = [i for i in range(len(rows)) if i not in done][procs.rank::procs.world]
    procs.barrier()

    own = raw_path if procs.rank == 0 else raw_path.with_name(f"{raw_path.name}.{procs.rank}")
    with AppendOnlyJsonl(own) as log:
        if not log.rows:
            log.append({"fingerprint": key, "members": names, "input": str(in_path)})
        who = f" (process {procs.rank} of {procs.world})" if procs.world > 1 else ""
        bar = tqdm(total=len(todo), desc="score" + who, unit="pair", disable=not progress or procs.rank != 0,
                   dynamic_ncols=True)
        # Rows go through the model `batch_size` pairs at a time; each is logged once its batch is scored.
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            prompts = [rows[i]["prompt"] for i in chunk]
            responses = pair_layout([rows[i]["chosen"] for i in chunk], [rows[i]["rejected"] for i in chunk])
            file_rows = [rows[i]["index"] + 1 for i in chunk]
            r = family.score(pair_layout(prompts, prompts), responses, row_ids=pair_layout(file_rows, file_rows))
            chosen, rejected = split_pairs(r, len(chunk))                                   # (b, K) each
            for j, i in enumerate(chunk):
                log.append({"row": i, "chosen": chosen[j].tolist(), "rejected": rejected[j].tolist()})
            bar.update(len(chunk))
        bar.close()
    procs.barrier()
    if procs.rank != 0:   # process 0 assembles the shards and writes OUT; the others wait for it
        procs.barrier()
        return ScoreResult(out_path, len(rows), len(todo), names, json.loads(meta_path.read_text())["stats"])

    scored_by = []
    for shard in _shards(raw_path):
        entries = _read_shard(shard)[1:]
        scored_by.append(len(entries))
        done.update((e["row"], e) for e in entries)
    missing = [i for i in range(len(rows)) if i not in done]
    if missing:
        raise RobustpoError(f"{raw_path}: {len(missing)} rows were not scored (first: row {missing[0]}); rerun")
    chosen = torch.tensor([done[i]["chosen"] for i in range(len(rows))], dtype=torch.float64)      # (N, K)
    rejected = torch.tensor([done[i]["rejected"] for i in range(len(rows))], dtype=torch.float64)  # (N, K)
    if chosen.shape[1] != len(names):
        raise RobustpoError(f"{raw_path}: rows hold {chosen.shape[1]} rewards, the family has {len(names)}")
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

    write_json_atomic(meta_path, {**settings, "family": family.name, "members": names, "input": str(in_path),
                                  "rows": len(rows), "data": report.summary(), "stats": stats,
                                  "rows_scored_by_process": scored_by})
    write_jsonl_atomic(output.partial, out_rows())
    output.complete()
    for shard in _shards(raw_path):
        shard.unlink()
    procs.barrier()
    return ScoreResult(out_path, len(rows), len(todo), names, stats)
