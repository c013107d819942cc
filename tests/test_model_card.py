"""Model cards: final/README.md names every hyperparameter of its run, parsed back (issue 13 item 3)."""

import json
import shlex

import yaml

from robustpo.config import RunConfig, from_dict, load_config, to_dict
from robustpo.loss_spec import LOSSES
from robustpo.train.preference import train_preference

from testdata import TINY_PAIRS, card_config, card_tables, flat_leaves, read_card


def test_every_loss_has_a_formula():
    assert all(spec.formula for spec in LOSSES.values())


def test_final_card_names_every_hyperparameter(tmp_path, tiny_model_dir, write_jsonl):
    from transformers import AutoModelForCausalLM

    import robustpo
    from robustpo.cli import build_parser
    from robustpo.data.io import file_fingerprint

    data = write_jsonl(TINY_PAIRS.read_text().splitlines()[:12])
    n_rows = sum(1 for line in data.read_text().splitlines() if line.strip())
    run = tmp_path / "run"
    cfg = from_dict(RunConfig, {
        "model": {"name_or_path": str(tiny_model_dir)},
        "data": {"train": str(data), "max_length": 48, "max_prompt_length": 24},
        "loss": {"name": "cdpo", "label_smoothing": 0.2}, "regularizers": [{"name": "bcr", "budget": 0.0}],
        "train": {"output_dir": str(run), "batch_size": 4, "max_steps": 2, "learning_rate": 1e-2,
                  "warmup_ratio": 0.0, "scheduler": "constant"}})
    train_preference(cfg)
    final = run / "final"
    front, sections = read_card(final)
    assert front["library_name"] == "transformers" and {"robustpo", "cdpo", "bcr"} <= set(front["tags"])
    assert "base_model" not in front and "datasets" not in front   # local paths are not hub ids

    # Every leaf of config.yaml, read from disk, is in the card's config block with the same value.
    saved = yaml.safe_load((run / "config.yaml").read_text())
    in_card = dict(flat_leaves(card_config(sections)))
    for key, value in flat_leaves(saved):
        assert key in in_card and in_card[key] == value, key
    # Every hyperparameter of the objective and of each regularizer is in its table.
    for section, losses in [("Objective", [saved["loss"]]), ("Regularizers", saved["regularizers"])]:
        table = {cells[0].strip("`"): json.loads(cells[1].strip("`")) for cells in card_tables(sections[section])}
        for loss in losses:
            assert f"`{loss['name']}`" in sections[section] and LOSSES[loss["name"]].formula in sections[section]
            params = {k: v for k, v in loss.items() if k != "name"}
            assert params and all(table[k] == v for k, v in params.items()), (params, table)

    # The data file, with its row count and content fingerprint (the one inputs.json records).
    (line,) = [cells for cells in card_tables(sections["Data"]) if cells[1] == f"`{data}`"]
    assert line[0] == "data.train" and line[2] == str(n_rows)
    assert line[4].strip("`") == file_fingerprint(data) == json.loads((run / "inputs.json").read_text())[
        "data.train:content"]
    # The final train metrics are the last row of metrics.jsonl.
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    metrics = {c[0].strip("`"): json.loads(c[1].strip("`")) for c in card_tables(sections["Results"])}
    assert metrics["loss"] == last["loss"] and metrics["step"] == 2

    # The version, and a command that reloads exactly this config (into a fresh output folder).
    assert f"robustpo {robustpo.__version__}" in sections["Reproduce"]
    (command,) = [ln for ln in sections["Reproduce"].splitlines() if ln.startswith("robustpo train ")]
    args, overrides = build_parser().parse_known_args(shlex.split(command)[1:])
    again = to_dict(load_config(args.recipe, overrides))
    assert again["train"].pop("output_dir") == f"{run}-rerun"
    saved["train"].pop("output_dir")
    assert again == saved
    assert AutoModelForCausalLM.from_pretrained(final) is not None
