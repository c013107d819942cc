"""Bad families and bad scoring data: a clear error naming what is wrong, and nothing written lost."""

import json
import shutil

import pytest
import torch

from rewardtesting import write_rows
from robustpo.cli import main
from robustpo.errors import DataError
from robustpo.rewards import FamilyError, assemble_family, load_family, score_dataset
from robustpo.rewards.synthetic import make_pairs


@pytest.fixture
def family_copy(bootstrap_family, tmp_path):
    """A private copy of the trained family that a test may damage."""
    target = tmp_path / "family"
    shutil.copytree(bootstrap_family, target, ignore=shutil.ignore_patterns("runs", "base_model"))
    return target


def edit_manifest(family_dir, change):
    path = family_dir / "family.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def other_tokenizer_model(path):
    """A reward model with its own tokenizer (trained on other texts): a stranger to the family."""
    from transformers import AutoModelForSequenceClassification

    from robustpo.tiny import tiny_config, train_tokenizer

    tok = train_tokenizer(["completely different words here"] * 20, vocab_size=280)
    cfg = tiny_config("llama", len(tok), hidden_size=32, pad_token_id=tok.pad_token_id)
    cfg.num_labels = 1
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_missing_member(family_copy):
    shutil.rmtree(family_copy / "members" / "member-1")
    with pytest.raises(FamilyError, match=r"member 'member-1' .* is missing"):
        load_family(family_copy)


def test_manifest_size_does_not_match_members(family_copy):
    edit_manifest(family_copy, lambda m: m.update(size=4))
    with pytest.raises(FamilyError, match="says size 4 but lists 3 members"):
        load_family(family_copy)


def test_member_weights_changed_since_manifest(family_copy):
    """Swap member-1's weights for member-0's: same architecture and file size, other weights."""
    shutil.copy(family_copy / "members" / "member-0" / "model.safetensors",
                family_copy / "members" / "member-1" / "model.safetensors")
    with pytest.raises(FamilyError, match=r"member 'member-1' .* does not match the manifest"):
        load_family(family_copy)


def test_manifest_head_out_of_range(family_copy):
    edit_manifest(family_copy, lambda m: m["members"][2].update(head=1))
    with pytest.raises(FamilyError, match=r"member 'member-2' .* uses head 1, but that model has 1 output"):
        load_family(family_copy)


def test_not_a_family_folder(tmp_path):
    with pytest.raises(FamilyError, match="neither a family folder"):
        load_family(tmp_path)
    (tmp_path / "family.json").write_text("{not json")
    with pytest.raises(FamilyError, match="not valid JSON"):
        load_family(tmp_path)


def test_mismatched_tokenizers(bootstrap_family, tmp_path):
    stranger = other_tokenizer_model(tmp_path / "stranger")
    with pytest.raises(FamilyError, match=r"mismatched tokenizers \(member-0; stranger\)"):
        assemble_family([bootstrap_family / "members" / "member-0", stranger], tmp_path / "mixed")
    assert not (tmp_path / "mixed" / "family.json").exists()


def test_assemble_from_members_cli(bootstrap_family, synthetic_path, tmp_path, capsys):
    """`robustpo reward family --members A B --heldout DATA`: a 2-member family scoring like its sources."""
    out = tmp_path / "assembled"
    members = [str(bootstrap_family / "members" / n) for n in ("member-2", "member-0")]
    assert main(["reward", "family", "--members", *members, "--out", str(out), "--heldout", str(synthetic_path)]) == 0
    assert "disagreement over 2 members" in capsys.readouterr().out
    manifest = json.loads((out / "family.json").read_text())
    assert [m["name"] for m in manifest["members"]] == ["member-2", "member-0"]
    assert manifest["members"][0]["heldout"]["pairs"] == 240
    assembled, original = load_family(out), load_family(bootstrap_family)
    prompts, responses = ["Review the show:"] * 2, [" superb and lovely.", " dull."]
    assert torch.allclose(assembled.score(prompts, responses), original.score(prompts, responses)[:, [2, 0]],
                          atol=1e-5)


def test_wrong_format_scoring_rows_fail_before_anything_is_written(bootstrap_family, tmp_path):
    rows = make_pairs(6, seed=1)
    del rows[3]["rejected"]
    bad = write_rows(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "scored.jsonl"
    with pytest.raises(DataError, match=r"bad.jsonl.*row 4.*field 'rejected'"):
        score_dataset(bootstrap_family, bad, out, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["bad.jsonl"]        # no OUT, raw, partial or meta file
    rows[3]["rejected"] = 17
    write_rows(bad, rows)
    assert main(["reward", "score", "--family", str(bootstrap_family), "--data", str(bad), "--out", str(out)]) == 2
    assert not out.exists()


def test_nan_member_stops_and_keeps_earlier_output(bootstrap_family, tmp_path):
    """A member with NaN weights: the error names it; the earlier output at OUT is untouched."""
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(bootstrap_family / "members" / "member-0", broken)
    weights = load_file(broken / "model.safetensors")
    weights["score.weight"] = torch.full_like(weights["score.weight"], float("nan"))
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    family = assemble_family([bootstrap_family / "members" / "member-1", broken], tmp_path / "fam")

    data = write_rows(tmp_path / "d.jsonl", make_pairs(10, seed=1))
    out = tmp_path / "scored.jsonl"
    score_dataset(bootstrap_family, data, out, progress=False)
    before = out.read_bytes()
    with pytest.raises(FamilyError, match=r"member 'broken' gave a non-finite reward \(nan\) for row \d+"):
        score_dataset(family, data, out, overwrite=True, progress=False)
    assert out.read_bytes() == before


def test_output_exists_from_other_settings(bootstrap_family, tmp_path):
    data = write_rows(tmp_path / "d.jsonl", make_pairs(8, seed=1))
    out = tmp_path / "scored.jsonl"
    score_dataset(bootstrap_family, data, out, progress=False)
    before = out.read_bytes()
    from robustpo.errors import ConfigError

    with pytest.raises(ConfigError, match="already exists"):
        score_dataset(bootstrap_family, data, out, normalize="standardize", progress=False)
    with pytest.raises(ConfigError, match="would overwrite the input"):
        score_dataset(bootstrap_family, data, data, progress=False)
    with pytest.raises(ConfigError, match="needs normalize=standardize"):
        score_dataset(bootstrap_family, data, tmp_path / "x.jsonl", stats_from=tmp_path / "y.json", progress=False)
    with pytest.raises(ConfigError, match="normalize must be one of"):
        score_dataset(bootstrap_family, data, tmp_path / "x.jsonl", normalize="zscore", progress=False)
    assert out.read_bytes() == before


def test_assemble_with_copy_is_self_contained(bootstrap_family, multihead_family, tmp_path):
    """Copied members still load after the family folder moves: it is self-contained. Each model
    folder is copied once (a folder listed twice, the three heads of one multi-head model)."""
    out = assemble_family([bootstrap_family / "members" / "member-0", bootstrap_family / "members" / "member-0",
                           multihead_family], tmp_path / "fam", copy=True)
    manifest = json.loads((out / "family.json").read_text())
    assert [m["name"] for m in manifest["members"]] == ["member-0", "member-0-2", "head-0", "head-1", "head-2"]
    assert sorted(p.name for p in (out / "members").iterdir()) == ["head-0", "member-0"]
    assert all(not m["path"].startswith("/") for m in manifest["members"])
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    family = load_family(moved)
    scores = family.score(["Review the show:"], [" superb."])
    assert scores.shape == (1, 5) and scores[0, 0] == pytest.approx(scores[0, 1].item(), abs=1e-6)
