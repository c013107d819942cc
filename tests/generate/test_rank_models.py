"""`robustpo rank` with model judges through the CLI: a local LM judge (pairwise) and a
reward model (the pointwise baseline), and the errors for inputs rank cannot use."""

import pytest

from genhelpers import HERE, read_jsonl, run_cli, write_jsonl
from robustpo.judges import load_judge

ROWS = [{"prompt": "Tell me about cats.", "completions": [" cats sat", " dogs ran in the park", " 5.", " cats"]},
        {"prompt": [{"role": "user", "content": "what is 2 plus 3?"}], "completions": [" 5.", " 8. 2", " 5"]}]


def test_lm_judge_ranks_through_the_cli(tiny_policy_dir, tmp_path):
    src, out = write_jsonl(tmp_path / "s.jsonl", ROWS), tmp_path / "pairs.jsonl"
    assert run_cli(["rank", "--judge", f"lm:{tiny_policy_dir}", "-J", "chat=false", "--in", src, "--out", out,
                    "--strategy", "insertion", "--no-progress"]) == 0
    pairs = read_jsonl(out)
    assert len(pairs) == 2
    judge = load_judge(f"lm:{tiny_policy_dir}", chat="false")
    for row, pair in zip(ROWS, pairs):
        m = pair["meta"]
        assert m["judge"] == judge.name and sorted(m["ranking"]) == list(range(len(row["completions"])))
        assert (pair["chosen"], pair["rejected"]) == (row["completions"][m["ranking"][0]],
                                                      row["completions"][m["ranking"][-1]])
        # When best and worst met directly, insertion placed them by that verdict, and a tie
        # never moves an item ahead: the judge preferred the chosen, or tied.
        if "prob_chosen_better" in m:
            assert m["prob_chosen_better"] >= 0.5
    # This tokenizer splits " A" into a bare space + "A": only the single tokens "A" and "B" count.
    assert judge.label_ids == [[judge.tokenizer("A").input_ids[0]], [judge.tokenizer("B").input_ids[0]]]
    log = read_jsonl(str(out) + ".judgments.jsonl")
    assert all("logp_A" in r["raw"] and "logp_B" in r["raw"] for r in log)


def test_pointwise_baseline_with_a_reward_model(tiny_reward_dir, tmp_path):
    src, out = write_jsonl(tmp_path / "s.jsonl", ROWS[:1]), tmp_path / "pairs.jsonl"
    assert run_cli(["rank", "--judge", f"reward:{tiny_reward_dir}", "--in", src, "--out", out,
                    "--strategy", "pointwise", "--pairs", "adjacent", "--no-progress"]) == 0
    pairs = read_jsonl(out)
    scores = {int(k): v for k, v in pairs[0]["meta"]["scores"].items()}
    by_score = sorted(scores, key=lambda i: -scores[i])
    comps = ROWS[0]["completions"]
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [(comps[a], comps[b]) for a, b in
                                                             zip(by_score, by_score[1:])]
    # The recorded scores are the reward model's (checked against a plain forward in tests/judges).
    judge = load_judge(f"reward:{tiny_reward_dir}")
    assert [scores[i] for i in range(4)] == pytest.approx(judge.score([ROWS[0]["prompt"]] * 4, comps), abs=1e-5)


def test_inputs_rank_cannot_use_are_clear_errors(tmp_path, capsys):
    rule = f"function:{HERE / 'judge_rules.py'}:longer_is_better"
    good = write_jsonl(tmp_path / "s.jsonl", ROWS)
    assert run_cli(["rank", "--judge", rule, "--in", good, "--out", tmp_path / "o.jsonl",
                    "--strategy", "pointwise"]) == 2
    assert "has no score()" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], {"prompt": "p", "completions": "just one string"}])
    assert run_cli(["rank", "--judge", rule, "--in", bad, "--out", tmp_path / "o2.jsonl"]) == 2
    assert "bad.jsonl, row 2, field 'completions': expected a list of strings" in capsys.readouterr().err
    assert run_cli(["rank", "--judge", "lm:/no/such/model", "--in", good, "--out", tmp_path / "o3.jsonl"]) == 2
    assert "cannot load judge model" in capsys.readouterr().err
