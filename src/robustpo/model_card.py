"""Hugging Face model cards (README.md) for the model folders robustpo saves.

A card is YAML front matter (the Hub's metadata) and markdown: the base model, the data (rows
and content fingerprints), the objective with its formula and every hyperparameter, the final
metrics, the robustpo version and the command that reproduces the run. The run's config.yaml
is embedded whole as a ```yaml block, so the card alone says how the model was made (and
tests/test_model_card.py parses it back). Callers write the card inside the folder's atomic
temp copy, so a finished folder never lacks it: final/ (train/preference.py) and each
reward-family member (train/reward.py); a best/ folder is to call `preference_card` the same way.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

NOTATION = ("Δ(y) = logp_θ(y) − logp_ref(y), log-probs summed over the response tokens; h = Δ(w) − Δ(l) "
            "for the chosen w and rejected l; n(y) = response tokens; Δr = r(x, w) − r(x, l) of a reward "
            "model; KL̂ = mean_b −(Δ(w_b) + Δ(l_b))/2 (or over reference samples when the data has them).")


def flatten(tree, prefix: str = "") -> dict:
    """Dotted leaf keys of nested dicts; lists and empty dicts are leaves."""
    if isinstance(tree, dict) and tree:
        return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def value(v) -> str:
    """A table cell holding `v` as JSON, so a reader parses it back to the exact value."""
    return f"`{json.dumps(v, ensure_ascii=False)}`"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def is_hub_id(source: str | None) -> bool:
    """`owner/name` that is no local path (nor a `tiny:` model): what the Hub's metadata may name."""
    return bool(source) and source.count("/") == 1 and ":" not in source and not Path(source).exists()


def front_matter(cfg, *, pipeline_tag: str, tags: list[str]) -> dict:
    front = {"library_name": "transformers", "pipeline_tag": pipeline_tag, "tags": ["robustpo", *tags]}
    if is_hub_id(cfg.model.name_or_path):
        front["base_model"] = cfg.model.name_or_path
    hub_data = [s for s in (cfg.data.train, getattr(getattr(cfg, "reward", None), "heldout", None)) if is_hub_id(s)]
    if hub_data:
        front["datasets"] = hub_data
    return front


def data_section(cfg, rows: dict[str, tuple[int, str]]) -> str:
    """One line per data source: `rows` maps its config key to (rows read, what was used)."""
    from robustpo.train.run_folder import input_fingerprints

    prints = input_fingerprints(cfg)
    sources = {"data.train": cfg.data.train, "reward.heldout": getattr(getattr(cfg, "reward", None), "heldout", None),
               "data.eval": getattr(cfg.data, "eval", None)}
    lines = [[key, f"`{sources[key]}`", n, used, f"`{prints.get(f'{key}:content', '')}`"]
             for key, (n, used) in rows.items()]
    return (table(["key", "source", "rows read", "used", "content fingerprint"], lines)
            + "\n\nFingerprint: the first 16 hex digits of the sha256 of the file's bytes (`hub:` for a hub id), "
              "as in the run folder's inputs.json.")


def model_section(cfg) -> str:
    m = cfg.model
    lines = [f"- base model: `{m.name_or_path}`", f"- reference: `{m.reference or m.name_or_path}`",
             f"- tokenizer: `{m.tokenizer or m.name_or_path}`", f"- dtype: `{m.dtype}`",
             f"- LoRA: {value(None if m.lora is None else dataclasses.asdict(m.lora))}"
             + (" (merged into the saved weights)" if m.lora else "")]
    return "\n".join(lines)


def loss_section(lc) -> str:
    spec = lc.spec
    rows = [[f"`{k}`", value(v), value(spec.defaults[k])] for k, v in lc.params.items()]
    return (f"**`{spec.name}`** ({spec.kind}): {spec.summary}\n\n`{spec.formula}`\n\n"
            + (table(["hyperparameter", "value", "default"], rows) if rows else "No hyperparameters."))


def metrics_table(metrics: dict) -> str:
    return table(["metric", "value"], [[f"`{k}`", value(v)] for k, v in metrics.items()]) if metrics else "None."


def config_section(run_dir: Path) -> str:
    """config.yaml as saved beside the model, and any change a --resume --allow-changes made."""
    from robustpo.train.run_folder import CONFIG_CHANGES

    text = f"The resolved config (`config.yaml`), every value the run started with:\n\n```yaml\n" \
           f"{(run_dir / 'config.yaml').read_text()}```"
    changes = run_dir / CONFIG_CHANGES
    if changes.exists():
        rows = [json.loads(line) for line in changes.read_text().splitlines() if line.strip()]
        cells = [[r["step"], f"`{r['key']}`", value(r["old"]), value(r["new"])] for r in rows]
        text += ("\n\nChanged on resume (`config_changes.jsonl`; the command below reproduces the values above, "
                 "not these):\n\n" + table(["step", "key", "old", "new"], cells))
    return text


def reproduce_section(command: str) -> str:
    from robustpo import __version__

    return (f"robustpo {__version__}. From the working directory the run was started in (relative paths in "
            f"config.yaml are read from there):\n\n```bash\n{command}\n```")


def render(front: dict, title: str, sections: list[tuple[str, str]]) -> str:
    head = yaml.safe_dump(front, sort_keys=False, allow_unicode=True)
    body = "\n\n".join(f"## {heading}\n\n{text.strip()}" for heading, text in sections)
    return f"---\n{head}---\n\n# {title}\n\n{body}\n"


def last_metrics(run_dir: Path, kind: str = "train") -> dict:
    """The last logged row of metrics.jsonl of `kind`: train (the final train metrics), or eval
    (the last evaluation: eval rows hold only `step` and eval/ keys)."""
    from robustpo.data.io import AppendOnlyJsonl

    path = run_dir / "metrics.jsonl"
    rows = AppendOnlyJsonl.read(path)[0] if path.exists() else []
    rows = [r for r in rows if any(k.startswith("eval/") for k in r) == (kind == "eval")]
    return rows[-1] if rows else {}


def eval_results(run_dir: Path) -> str:
    """The card's evaluation paragraph: the last eval row (for best/, the one that made it best)."""
    row = last_metrics(run_dir, "eval")
    if not row:
        return "Evaluation: none during training (`robustpo eval` measures a saved policy)."
    return (f"Evaluation on the held-out pairs at step {row['step']} (data.eval / data.eval_fraction):\n\n"
            + metrics_table({k: v for k, v in row.items() if k != "step"}))


def preference_card(cfg, run_dir: Path, report, saved: str = "final") -> str:
    """The card of a policy folder of the preference run in `run_dir` (`saved`: final, best)."""
    spec = cfg.loss.spec
    regs = cfg.regularizers
    objective = loss_section(cfg.loss) + f"\n\nNotation: {NOTATION}"
    if regs:
        objective += "\n\nTrained loss: the objective plus each regularizer below."
    rows = {"data.train": (report.rows_read, f"{report.rows_kept} pairs kept"
                           + (f" (data.max_rows = {cfg.data.max_rows})" if cfg.data.max_rows else ""))}
    if (run_dir / "eval_rows.json").exists():   # written by the trainer when it evaluates
        evaluated = len(json.loads((run_dir / "eval_rows.json").read_text())["rows"])
        if cfg.data.eval:
            rows["data.eval"] = (evaluated, f"{evaluated} pairs evaluated")
        else:
            rows["data.train"] = (report.rows_read, rows["data.train"][1] + f"; {evaluated} of them held out for "
                                  f"evaluation (data.eval_fraction = {cfg.data.eval_fraction}), not trained on")
    out = cfg.train.output_dir
    use = (f"```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
           f"model = AutoModelForCausalLM.from_pretrained(\"{out}/{saved}\")\n"
           f"tokenizer = AutoTokenizer.from_pretrained(\"{out}/{saved}\")\n```")
    sections = [
        ("Model", model_section(cfg)), ("Data", data_section(cfg, rows)), ("Objective", objective),
        ("Regularizers", "\n\n".join(loss_section(r) for r in regs) or "None."),
        ("Results", "Final train metrics (the last row of metrics.jsonl):\n\n" + metrics_table(last_metrics(run_dir))
         + "\n\n" + eval_results(run_dir)),
        ("Training configuration", config_section(run_dir)),
        ("Reproduce", reproduce_section(f"robustpo train {out}/config.yaml --train.output_dir={out}-rerun")),
        ("Use", use)]
    front = front_matter(cfg, pipeline_tag="text-generation",
                         tags=["preference-optimization", spec.name, *(r.name for r in regs)])
    return render(front, f"{Path(out).name}/{saved}: a policy trained with `{spec.name}` by robustpo", sections)


def reward_objective(cfg, plan) -> str:
    """The objective as this member was trained: for Bradley–Terry its margin, confound, centering
    and penalty terms; for a pairwise model (rewards/pairwise.py) the both-orders loss."""
    r, confound = cfg.reward, cfg.reward.confound
    if r.kind == "pairwise":
        return ("Pairwise preference (a cross-encoder of both responses): `P(A ≻ B | x) = σ(f(x, A, B) − f(x, B, A))`, "
                "loss `−log P(w ≻ l | x)`; f reads both orders of every pair in every step, so "
                "P(A ≻ B) + P(B ≻ A) = 1 by construction.")
    logit = "r(x, w) − r(x, l)" + (" + b·(φ(w) − φ(l))" if plan.debias else "") + (" − m" if r.use_margin else "")
    loss = f"−log σ({logit})" + (" + c·(r(x, w) + r(x, l))²" if r.center_coef else "")
    if confound is not None and confound.decorrelate and plan.role != "slope-probe":
        loss += " + λ·corr(r, φ)² (over each batch's responses)"
    notes = ["b: the confound expert's learned coefficient (scoring uses r alone)"] if plan.debias else []
    notes += ["m: each row's `margin` column"] if r.use_margin else []
    notes += ["c = reward.center_coef"] if r.center_coef else []
    notes += ["pairs weighted (bootstrap counts or importance weights)"] if r.family.mode in ("multihead",
                                                                                             "reweight") else []
    return f"Bradley–Terry: `{loss}`" + (f"; {'; '.join(notes)}." if notes else ".")


def reward_card(cfg, plan, summary: dict, rows: dict, entries: list[dict] | None = None) -> str:
    """The card of reward folder members/<plan.name>; `entries`: its family.json members (the
    held-out metrics are there), None before the manifest is written."""
    from robustpo.config import to_dict

    r = cfg.reward
    out = cfg.train.output_dir
    hparams = [[f"`reward.{k}`", value(v)] for k, v in flatten(to_dict(r)).items()]
    hparams += [[f"`{k}`", value(v)] for k, v in [("seed", plan.seed), ("heads", plan.num_labels),
                                                    ("role", plan.role), ("debias", plan.debias)]]
    fitted = {k: summary[k] for k in ("confound_coef_fitted", "scale") if k in summary}
    data = data_section(cfg, rows) + "\n\nThis model's pairs: " + value(
        {k: v for k, v in plan.data.items() if k != "rows"}) + f" (row indices: runs/{plan.name}/data_rows.json)."
    results = ("Final train metrics:\n\n" + metrics_table({"steps": summary.get("steps"),
                                                           **summary.get("final_train_metrics", {}), **fitted}))
    if plan.role == "slope-probe":
        results += "\n\nNot a family member: a plain model that measures the confound's slope ĉ (span_scale: slope)."
    elif entries is None:
        results += "\n\nFamily members and held-out metrics: in family.json once the family is complete."
    else:
        results += "\n\nFamily members in this folder (family.json), with held-out metrics where measured:\n\n" + table(
            ["member", "head", "confound_coef", "held-out"],
            [[f"`{e['name']}`", e["head"], value(e.get("confound_coef")), value(e.get("heldout"))] for e in entries])
    if r.kind == "pairwise":
        from robustpo.rewards.pairwise import PAIRWISE_FILE, TEMPLATE

        model = model_section(cfg) + (f"\n- one sequence per ordered pair, `{TEMPLATE}` (max length "
                                      f"{cfg.data.max_length}, prompt {cfg.data.max_prompt_length}); f(x, A, B) is the "
                                      f"one-output score head at the last position; `{PAIRWISE_FILE}` records this")
    else:
        model = model_section(cfg) + f"\n- reward head: `{r.head}`, pooling `{r.pooling}`, {plan.num_labels} head(s)"
    sections = [
        ("Model", model), ("Data", data),
        ("Objective", reward_objective(cfg, plan) + "\n\n" + table(["hyperparameter", "value"], hparams)),
        ("Results", results), ("Training configuration", config_section(Path(out))),
        ("Reproduce", reproduce_section(f"robustpo reward train {out}/config.yaml --train.output_dir={out}-rerun")
         + f"\n\nThis trains the whole family (reward.family.mode `{r.family.mode}`); this model is "
           f"members/{plan.name}.")]
    front = front_matter(cfg, pipeline_tag="text-classification",
                         tags=["reward-model", "pairwise-preference" if r.kind == "pairwise" else "bradley-terry",
                               f"family-{r.family.mode}"])
    what = "a pairwise preference model" if r.kind == "pairwise" else "a reward model"
    return render(front, f"{Path(out).name}/members/{plan.name}: {what} trained by robustpo", sections)


def write_card(folder: Path, text: str) -> None:
    """README.md of `folder`, replaced whole (a reader never sees half a card)."""
    from robustpo.data.io import atomic_path

    with atomic_path(Path(folder) / "README.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
