"""Training reward models and families; the family folder, its manifest and plain-transformers reloads."""

import json

import numpy as np
import pytest
import torch

from rewardtesting import reward_config, write_rows
from robustpo.errors import ConfigError
from robustpo.rewards import load_family
from robustpo.rewards.synthetic import make_pairs


def manifest(family_dir):
    return json.loads((family_dir / "family.json").read_text())


def test_bootstrap_family_learns_and_members_differ(bootstrap_family):
    """Preference = more positive words, 10% labels flipped: chance is 0.5, the ceiling about 0.9.
    Measured (seed 0, 180 training pairs, 3 epochs, 60 held out): members 0.783, 0.800, 0.767,
    their mean 0.867; the bar is 0.7, well above chance and clear of seed-to-seed noise."""
    m = manifest(bootstrap_family)
    assert m["mode"] == "bootstrap" and m["size"] == 3 and len(m["members"]) == 3
    for member in m["members"]:
        assert member["heldout"]["pairs"] == 60
        assert member["heldout"]["accuracy"] >= 0.7, member["heldout"]
        # A bootstrap draw of n pairs holds about (1 − 1/e) ≈ 63% distinct ones.
        assert member["data"]["pairs"] == 180 and 0.5 < member["data"]["unique_pairs"] / 180 < 0.75
        assert member["made"]["mode"] == "bootstrap" and member["made"]["steps"] > 0
    assert m["heldout"]["mean_of_members"]["accuracy"] >= 0.7
    # Members differ: in their data, in their weights and in their judgements.
    rows = [json.loads((bootstrap_family / member["data"]["rows_file"]).read_text())["rows"] for member in m["members"]]
    assert len({tuple(r) for r in rows}) == 3
    from safetensors.torch import load_file

    heads = [load_file(bootstrap_family / member["path"] / "model.safetensors")["score.weight"]
             for member in m["members"]]
    assert not torch.allclose(heads[0], heads[1]) and not torch.allclose(heads[1], heads[2])
    assert m["heldout"]["disagreement"]["delta_std"] > 0.05


def test_members_reload_with_plain_transformers(bootstrap_family):
    """family.score equals what AutoModelForSequenceClassification gives for prompt + response + EOS."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    family = load_family(bootstrap_family, batch_size=4)
    prompts = ["Review the film:", "Review the phone:", "Review the game:"]
    responses = [" great plot and superb cast.", " awful.", " the story was quite dull and very boring really."]
    scores = family.score(prompts, responses)                       # (3, 3), padded batches
    assert scores.shape == (3, 3) and [m["name"] for m in family.members] == ["member-0", "member-1", "member-2"]
    for k, member in enumerate(family.members):
        path = bootstrap_family / member["path"]
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        for i, (p, r) in enumerate(zip(prompts, responses)):
            ids = tok(p, add_special_tokens=False)["input_ids"] + tok(r, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                alone = model(input_ids=torch.tensor([ids + [tok.eos_token_id]])).logits[0, 0]
            assert scores[i, k].item() == pytest.approx(alone.item(), abs=1e-4)
    # The trained preference shows: a positive review outscores a negative one for every member.
    assert (scores[0] > scores[1]).all()


def test_single_reward_model_folder_is_a_family_of_one(bootstrap_family):
    family = load_family(bootstrap_family)
    member = load_family(bootstrap_family / "members" / "member-1")
    prompts, responses = ["Review the album:"] * 2, [" lovely.", " broken and poor."]
    assert member.size == 1
    assert torch.allclose(member.score(prompts, responses)[:, 0], family.score(prompts, responses)[:, 1], atol=1e-5)


def test_multihead_family_is_one_model_with_k_heads(multihead_family, bootstrap_family):
    m = manifest(multihead_family)
    assert m["mode"] == "multihead" and [x["head"] for x in m["members"]] == [0, 1, 2]
    assert len({x["path"] for x in m["members"]}) == 1
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(multihead_family / m["members"][0]["path"]).num_labels == 3
    # Head k trains on the same bootstrap draw k that independent member k was trained on.
    boot = manifest(bootstrap_family)["members"]
    assert m["members"][0]["data"]["unique_pairs_per_head"] == [b["data"]["unique_pairs"] for b in boot]
    for member in m["members"]:   # measured 0.833, 0.850, 0.850 (disagreement far below independent members')
        assert member["heldout"]["accuracy"] >= 0.7, member["heldout"]
    assert m["heldout"]["disagreement"]["delta_std"] > 0.0
    family = load_family(multihead_family)
    assert len(family._models) == 1 and family.size == 3          # one forward scores all heads


def test_member_plans_split_the_data_as_documented():
    """seed: all rows; bootstrap: n draws with replacement; subsets: disjoint, covering;
    multihead: head k's counts are exactly bootstrap member k's draw."""
    from robustpo.train.reward import plan_members

    items = [{"index": i} for i in range(50)]
    def plans(mode, size=3):
        cfg = reward_config("unused", "unused", size=size, mode=mode)
        return plan_members(items, cfg)
    assert all(p.data["rows"] == list(range(50)) for p in plans("seed"))
    assert len({p.seed for p in plans("seed")}) == 3
    subsets = [set(p.data["rows"]) for p in plans("subsets")]
    assert sum(len(s) for s in subsets) == 50 and set().union(*subsets) == set(range(50))
    boot = plans("bootstrap")
    assert all(len(p.items) == 50 for p in boot)
    (multi,) = plans("multihead")
    counts = np.array([it["head_weights"] for it in multi.items])       # (50, 3)
    for k, p in enumerate(boot):
        assert counts[:, k].tolist() == np.bincount(p.data["rows"], minlength=50).tolist()
    with pytest.raises(ConfigError, match="at least 60"):
        plans("subsets", size=60)


def test_subsets_family_lora_and_resume(tmp_path):
    """Two LoRA members on disjoint halves: saved merged (plain transformers folder, adapter kept);
    a second run without --resume refuses; with --resume it keeps the finished members."""
    from transformers import AutoModelForSequenceClassification

    from robustpo.train.reward import train_reward_family

    data = write_rows(tmp_path / "d.jsonl", make_pairs(40, seed=3))
    cfg = reward_config(tmp_path / "fam", data, size=2, mode="subsets", epochs=1, heldout_fraction=0.0)
    from robustpo.config import LoraConfig

    cfg.model.lora = LoraConfig(r=4, alpha=8)
    out = train_reward_family(cfg)
    m = manifest(out)
    assert "heldout" not in m and [x["data"]["pairs"] for x in m["members"]] == [20, 20]
    member_dir = out / m["members"][0]["path"]
    assert (member_dir / "adapter").is_dir()
    model = AutoModelForSequenceClassification.from_pretrained(member_dir)
    assert model.config.num_labels == 1 and not any("lora" in n for n, _ in model.named_parameters())
    with pytest.raises(ConfigError, match="--resume"):
        train_reward_family(cfg)
    before = (member_dir / "model.safetensors").stat().st_mtime_ns
    train_reward_family(cfg, resume=True)
    assert (member_dir / "model.safetensors").stat().st_mtime_ns == before


def test_each_member_has_a_model_card(bootstrap_family, synthetic_path):
    """members/<name>/README.md: every reward.* value of config.yaml in its hyperparameter table and
    config block, the data file with its row count and fingerprint, its held-out metrics."""
    import yaml

    from robustpo.data.io import file_fingerprint
    from testdata import card_config, card_tables, flat_leaves, read_card

    saved = yaml.safe_load((bootstrap_family / "config.yaml").read_text())
    n_rows = sum(1 for line in synthetic_path.read_text().splitlines() if line.strip())
    for member in manifest(bootstrap_family)["members"]:
        front, sections = read_card(bootstrap_family / member["path"])
        assert front["library_name"] == "transformers" and "reward-model" in front["tags"]
        assert dict(flat_leaves(card_config(sections))) == dict(flat_leaves(saved))
        table = {c[0].strip("`"): json.loads(c[1].strip("`")) for c in card_tables(sections["Objective"])}
        assert all(table[f"reward.{k}"] == v for k, v in flat_leaves(saved["reward"]))
        assert table["seed"] == member["made"]["seed"] and "−log σ(r(x, w) − r(x, l))" in sections["Objective"]
        (line,) = [c for c in card_tables(sections["Data"]) if c[0] == "data.train"]
        assert line[1] == f"`{synthetic_path}`" and line[2] == str(n_rows)
        assert line[4] == f"`{file_fingerprint(synthetic_path)}`"
        (row,) = [c for c in card_tables(sections["Results"]) if c[0] == f"`{member['name']}`"]
        assert json.loads(row[3].strip("`")) == member["heldout"]
        assert f"robustpo reward train {bootstrap_family}/config.yaml" in sections["Reproduce"]
