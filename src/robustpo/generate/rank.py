"""`robustpo rank` and `robustpo label`: judge completions, write canonical preference rows.

rank (iterative pairwise ranking, Chen et al., arXiv 2411.05875): each input row of
`robustpo generate` (`prompt`, `completions`) is ranked by a pairwise judge (or scored by
a reward model, the pointwise baseline), and the selected pairs are written as canonical
rows `{prompt, chosen, rejected, meta}` that `robustpo train` reads directly. Identical
completions are ranked once (an identical chosen and rejected is not a preference), and
empty or blank completions are not ranked (`meta.n_unique` counts those that were).
`meta` holds the ranking (input completion indices, best first, when the strategy gives a
full one), best, worst, the chosen/rejected indices, the number of distinct comparisons
and of judge calls, and how often the two orders disagreed.

label: judges existing pairs (any accepted input format; rows are written in the
canonical form, so HH-style implicit rows come out with an explicit prompt). When the judge prefers the rejected response the two are
swapped. `meta.label` records the judge, `prob_chosen_better` (for the row as written),
`swapped`, `tie` and whether the two orders disagreed. A tie (probability exactly 0.5,
e.g. a judge whose reply could not be parsed, or two orders that cancel) keeps the row
as it was and marks `tie: true`; `ties="drop"` leaves such rows out.

Both commands are resumable (generate/resume.py): a rerun skips finished input rows. Until
every input row is done the output rows are in `OUT.partial` (a run stopped by a judge
failure or a kill leaves no OUT); `OUT` appears, whole, when the last row is done. The
comparison log holds each comparison once (tagged with its input row), resumed or not.
"""

from __future__ import annotations

from dataclasses import dataclass

from robustpo.generate.pairs import check_strategy, read_pairs, read_samples, select_pairs
from robustpo.generate.ranking import pointwise, rank_many
from robustpo.generate.resume import ResumableOutput
from robustpo.judges.base import TIE, ComparisonLog, JudgeError, judge_both_orders, text_hash


@dataclass
class Summary:
    units: int = 0          # input rows processed now (not counting resumed ones)
    resumed: int = 0        # input rows already finished by an earlier run
    rows_written: int = 0
    no_pair: int = 0        # rank: prompts with fewer than two distinct completions / all tied
    comparisons: int = 0
    judge_calls: int = 0
    disagreements: int = 0
    swapped: int = 0        # label
    ties: int = 0           # label

    @property
    def disagreement_rate(self) -> float:
        return self.disagreements / self.comparisons if self.comparisons else 0.0


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="row", disable=not enabled, dynamic_ncols=True)


def _unique(completions: list[str]) -> list[int]:
    """Indices of the distinct non-empty completions (first occurrence). Empty or blank
    completions are left out: the data contract rejects an empty response in a pair."""
    seen: dict[str, int] = {}
    for i, c in enumerate(completions):
        if c.strip():
            seen.setdefault(c, i)
    return list(seen.values())


def _check_resumed(res: ResumableOutput, rows: list[dict], key: str, path: str) -> None:
    from robustpo.errors import ConfigError

    for unit, info in res.done.items():
        if unit >= len(rows) or info.get("prompt_hash") != text_hash(rows[unit][key]):
            raise ConfigError(f"{path} changed since {res.path} was started (row {unit + 1} differs); "
                              "use --overwrite to start again")


def _pending_chunks(res: ResumableOutput, rows: list[dict], in_path: str, chunk: int, desc: str, progress: bool,
                    summary: Summary):
    """Yield the rows not finished by an earlier run, `chunk` at a time, with a progress bar."""
    _check_resumed(res, rows, "prompt", in_path)
    summary.resumed = len(res.done)
    todo = [i for i in range(len(rows)) if i not in res.done]
    if todo:
        res.reopen()
    bar = _progress(len(rows), len(res.done), desc, progress)
    for start in range(0, len(todo), chunk):
        units = todo[start:start + chunk]
        yield units
        bar.update(len(units))
    bar.close()


def rank_file(in_path: str, out_path: str, judge, *, strategy: str = "tournament", selection: str = "best_worst",
              both_orders: bool = True, chunk: int = 16, log_path: str | None = None, overwrite: bool = False,
              progress: bool = True) -> Summary:
    check_strategy(strategy, selection)
    chunk = max(1, int(chunk))
    if strategy == "pointwise" and not hasattr(judge, "score"):
        raise JudgeError(f"the pointwise strategy scores each completion; judge '{judge.name}' has no score() "
                         "(use a reward:PATH judge)")
    rows = read_samples(in_path)
    settings = {"command": "rank", "judge": judge.name, "strategy": strategy, "selection": selection,
                "both_orders": both_orders}
    summary = Summary()
    log = ComparisonLog(log_path) if log_path else None
    try:
        with ResumableOutput(out_path, settings, overwrite=overwrite) as res:
            for units in _pending_chunks(res, rows, in_path, chunk, "rank", progress, summary):
                _rank_chunk(units, rows, judge, strategy, selection, both_orders, log, res, summary)
            res.complete()
    finally:
        if log is not None:
            log.close()
    return summary


def _rank_chunk(units, rows, judge, strategy, selection, both_orders, log, res, summary) -> None:
    uniq = [_unique(rows[u]["completions"]) for u in units]
    texts = [[rows[u]["completions"][k] for k in idx] for u, idx in zip(units, uniq)]
    calls = [0] * len(units)
    disagree = [0] * len(units)
    if strategy == "pointwise":
        flat_p = [rows[u]["prompt"] for u, t in zip(units, texts) for _ in t]
        flat_r = [c for t in texts for c in t]
        scores = judge.score(flat_p, flat_r)
        rankings, row_scores, pos = [], [], 0
        for t in texts:
            row_scores.append(scores[pos:pos + len(t)])
            rankings.append(pointwise(row_scores[-1]) if t else None)
            pos += len(t)
        calls = [len(t) for t in texts]
    else:
        def judge_batch(batch):
            prompts = [rows[units[s]]["prompt"] for s, _, _ in batch]
            both = judge_both_orders(judge, prompts, [texts[s][i] for s, i, _ in batch],
                                     [texts[s][j] for s, _, j in batch], log=log, both_orders=both_orders,
                                     source_rows=[units[s] for s, _, _ in batch])
            for (s, _, _), d in zip(batch, both.disagreements):
                calls[s] += 2 if both_orders else 1
                disagree[s] += int(d)
            return both.probs

        rankings = rank_many([len(t) for t in texts], strategy, judge_batch,
                             find_worst=selection == "best_worst")
    for k, u in enumerate(units):
        row, idx, ranking = rows[u], uniq[k], rankings[k]
        pairs = select_pairs(ranking, len(idx), selection) if ranking is not None else []
        meta_common = {
            "source_row": u, "judge": judge.name, "strategy": strategy, "selection": selection,
            "ranking": [idx[i] for i in ranking.order] if ranking and ranking.order else None,
            "best": idx[ranking.best] if ranking and idx else None,
            "worst": idx[ranking.worst] if ranking and idx and ranking.worst is not None else None,
            "n_completions": len(row["completions"]), "n_unique": len(idx),
            "comparisons": ranking.comparisons if ranking else 0, "judge_calls": calls[k],
            "disagreements": disagree[k],
        }
        if strategy == "pointwise" and ranking is not None:
            meta_common["scores"] = {str(idx[i]): s for i, s in enumerate(row_scores[k])}
        out_rows = []
        for c, r in pairs:
            meta = dict(meta_common, chosen_index=idx[c], rejected_index=idx[r])
            if ranking is not None and (c, r) in ranking.probs:
                meta["prob_chosen_better"] = ranking.probs[(c, r)]
            elif ranking is not None and (r, c) in ranking.probs:
                meta["prob_chosen_better"] = 1.0 - ranking.probs[(r, c)]
            out_rows.append({"prompt": row["prompt"], "chosen": texts[k][c], "rejected": texts[k][r], "meta": meta})
        res.finish(u, out_rows, {"prompt_hash": text_hash(row["prompt"]), "pairs": len(out_rows),
                                 "comparisons": meta_common["comparisons"], "judge_calls": calls[k],
                                 "disagreements": disagree[k]})
        summary.units += 1
        summary.rows_written += len(out_rows)
        summary.no_pair += int(not out_rows)
        summary.comparisons += meta_common["comparisons"]
        summary.judge_calls += calls[k]
        summary.disagreements += disagree[k]


def label_file(in_path: str, out_path: str, judge, *, both_orders: bool = True, ties: str = "keep",
               chunk: int = 64, log_path: str | None = None, overwrite: bool = False,
               progress: bool = True) -> Summary:
    from robustpo.errors import ConfigError

    if ties not in ("keep", "drop"):
        raise ConfigError(f"ties must be 'keep' or 'drop', got '{ties}'")
    chunk = max(1, int(chunk))
    rows = read_pairs(in_path)
    settings = {"command": "label", "judge": judge.name, "both_orders": both_orders, "ties": ties}
    summary = Summary()
    log = ComparisonLog(log_path) if log_path else None
    try:
        with ResumableOutput(out_path, settings, overwrite=overwrite) as res:
            for units in _pending_chunks(res, rows, in_path, chunk, "label", progress, summary):
                _label_chunk(units, rows, judge, both_orders, ties, log, res, summary)
            res.complete()
    finally:
        if log is not None:
            log.close()
    return summary


def _label_chunk(units, rows, judge, both_orders, ties, log, res, summary) -> None:
    both = judge_both_orders(judge, [rows[u]["prompt"] for u in units],
                             [rows[u]["chosen"] for u in units], [rows[u]["rejected"] for u in units],
                             log=log, both_orders=both_orders, source_rows=list(units))
    for u, p, d in zip(units, both.probs, both.disagreements):
        row, tie, swapped = rows[u], p == TIE, p < TIE
        new = dict(row)
        if swapped:
            new["chosen"], new["rejected"] = row["rejected"], row["chosen"]
            if "chosen_rewards" in row and "rejected_rewards" in row:
                new["chosen_rewards"], new["rejected_rewards"] = row["rejected_rewards"], row["chosen_rewards"]
        old_meta = dict(row.get("meta") or {})
        if "source_row" in old_meta:  # e.g. rank's: keep it, source_row now means this input
            old_meta["previous_source_row"] = old_meta["source_row"]
        new["meta"] = dict(old_meta, source_row=u, label={
            "judge": judge.name, "prob_chosen_better": 1.0 - p if swapped else p,
            "swapped": swapped, "tie": tie, "orders_disagree": d})
        out = [] if tie and ties == "drop" else [new]
        res.finish(u, out, {"prompt_hash": text_hash(row["prompt"]), "swapped": swapped, "tie": tie})
        summary.units += 1
        summary.rows_written += len(out)
        summary.comparisons += 1
        summary.judge_calls += 2 if both_orders else 1
        summary.disagreements += int(d)
        summary.swapped += int(swapped)
        summary.ties += int(tie)
