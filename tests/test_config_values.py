"""Issue 11, item 6 (config values): every value is checked when the recipe loads, before a
model or tokenizer is touched, with one line naming the key; a refused recipe leaves nothing
behind. Today several of these give tracebacks after the reference pass, and some (negative
lengths, epochs 0) train silently."""

import pytest

from robustpo.cli import main
from robustpo.config import SCHEDULERS

from testdata import REPO

DPO = REPO / "recipes" / "tiny" / "dpo.yaml"       # max_length 64, max_prompt_length 32


@pytest.mark.parametrize("override,message", [
    ("--train.batch_size=0", "train.batch_size must be >= 1, got 0"),
    ("--train.grad_accum=0", "train.grad_accum must be >= 1, got 0"),
    ("--train.logging_steps=0", "train.logging_steps must be >= 1, got 0"),
    ("--train.learning_rate=0", "train.learning_rate must be > 0, got 0.0"),
    ("--train.learning_rate=-1e-5", "train.learning_rate must be > 0, got -1e-05"),
    ("--train.learning_rate=.nan", "train.learning_rate must be > 0, got nan"),
    ("--train.adam_betas=[0.9, 1.0]", "train.adam_betas must be 2 values, each in [0, 1), got (0.9, 1.0)"),
    ("--train.adam_betas=[0.9]", "train.adam_betas must be 2 values, each in [0, 1), got (0.9,)"),
    ("--train.scheduler=linearr", f"train.scheduler must be one of {'|'.join(SCHEDULERS)}, got 'linearr'"),
    ("--train.scheduler=reduce_lr_on_plateau", "train.scheduler must be one of linear|"),
    ("--train.mixed_precision=fp8", "train.mixed_precision must be one of no|bf16|fp16, got 'fp8'"),
    ("--train.seed=-1", "train.seed must be >= 0, got -1"),
    ("--train.epochs=0", "train.epochs must be >= 1 unless train.max_steps > 0 (a run of no steps trains nothing), "
                         "got 0"),
    ("--train.warmup_ratio=1.5", "train.warmup_ratio must be in [0, 1], got 1.5"),
    ("--train.warmup_ratio=-0.1", "train.warmup_ratio must be in [0, 1], got -0.1"),
    ("--train.max_grad_norm=-1", "train.max_grad_norm must be >= 0, got -1.0"),
    ("--train.skip_nonfinite=-1", "train.skip_nonfinite must be >= 0, got -1"),
    ("--train.log_with=[tensorbored]", "train.log_with must be a list of values, each one of all|aim|tensorboard|"),
    ("--data.max_prompt_length=0", "data.max_prompt_length must be >= 1, got 0"),
    ("--data.max_prompt_length=-8", "data.max_prompt_length must be >= 1, got -8"),
    ("--data.max_prompt_length=64", "data.max_prompt_length must be < data.max_length (64), so that a response "
                                    "keeps a token, got 64"),
    ("--data.max_length=-5", "data.max_length must be >= 2, got -5"),
    ("--data.format=jsonl", "data.format must be one of auto|explicit|implicit|conversational, got 'jsonl'"),
    ("--data.max_rows=0", "data.max_rows must be >= 1, got 0"),
    ("--model.dtype=float64", "model.dtype must be one of float32|bfloat16|float16|auto, got 'float64'"),
    ("--model.lora={r: 0}", "model.lora.r must be >= 1, got 0"),
    ("--model.lora={dropout: 1.0}", "model.lora.dropout must be in [0, 1), got 1.0"),
    ("--loss.beta=-0.1", "loss.beta must be > 0 (objective 'dpo'), got -0.1"),
])
def test_a_bad_value_stops_train_at_load_with_one_line(tmp_path, capsys, override, message):
    run = tmp_path / "run"
    assert main(["train", str(DPO), override, f"--train.output_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"robustpo train: error: {DPO}: {message}") and err.count("\n") == 1
    assert not run.exists()


def test_epochs_zero_is_fine_with_max_steps(tmp_path):
    from robustpo.config import load_config

    cfg = load_config(DPO, ["--train.epochs=0", "--train.max_steps=3"])
    assert cfg.train.epochs == 0 and cfg.train.max_steps == 3


def test_every_listed_scheduler_runs_and_no_other_does():
    """SCHEDULERS are exactly the transformers schedulers that train with warmup and total
    steps alone (the others need arguments the trainers do not pass, or a metric per step)."""
    import torch
    from transformers import get_scheduler
    from transformers.trainer_utils import SchedulerType

    def runs(name):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        try:
            sched = get_scheduler(name, opt, num_warmup_steps=1, num_training_steps=4)
            for _ in range(3):
                opt.step()
                sched.step()
        except (TypeError, ValueError):
            return False
        return True

    assert {s.value for s in SchedulerType if runs(s.value)} == set(SCHEDULERS)


@pytest.fixture
def paths(tmp_path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "empty-folder").mkdir()
    return tmp_path


@pytest.mark.parametrize("override,message", [
    ("--model.name_or_path=/no/such/model", "model.name_or_path: /no/such/model is not a folder, and not a hub id "
                                            "(name or namespace/name)"),
    ("--model.name_or_path=./models/../x", "model.name_or_path: ./models/../x is not a folder, and not a hub id"),
    ("--model.name_or_path=TMP/a-file", "model.name_or_path: TMP/a-file is a file; expected a model folder or a hub id"),
    ("--model.name_or_path=TMP/empty-folder", "model.name_or_path: folder TMP/empty-folder holds no config.json or "
                                              "adapter_config.json: not a saved model"),
    ("--model.name_or_path=tiny:lama", "model.name_or_path: unknown tiny architecture 'lama' in 'tiny:lama' (choose "
                                       "from llama, qwen2, gpt2, gpt_neox)"),
    ("--model.name_or_path=tiny:llama?width=3", "model.name_or_path: unknown tiny model option 'width'"),
    ("--model.reference=/no/such/ref", "model.reference: /no/such/ref is not a folder, and not a hub id"),
    ("--train.output_dir=TMP/a-file/run", "train.output_dir: TMP/a-file/run cannot be created: TMP/a-file is a file"),
    ("--train.output_dir=TMP/a-file", "train.output_dir: TMP/a-file is a file, not a folder"),
    ("--train.output_dir=/proc/robustpo-test/run", "train.output_dir: /proc/robustpo-test/run cannot be written"),
])
def test_bad_paths_are_refused_before_any_work(paths, capsys, override, message):
    override, message = override.replace("TMP", str(paths)), message.replace("TMP", str(paths))
    before = sorted(p.name for p in paths.iterdir())
    args = ["train", str(DPO), override]
    if "output_dir" not in override:
        args.append(f"--train.output_dir={paths / 'run'}")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"robustpo train: error: {message}") and err.count("\n") == 1
    assert sorted(p.name for p in paths.iterdir()) == before      # nothing created


def test_a_hub_id_not_in_the_cache_is_refused_offline(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    run = tmp_path / "run"
    assert main(["train", str(DPO), "--model.name_or_path=Qwen/Qwen2.5-0.5B", f"--train.output_dir={run}"]) == 2
    assert capsys.readouterr().err == (
        "robustpo train: error: model.name_or_path: Qwen/Qwen2.5-0.5B is not a local folder, and HF_HUB_OFFLINE=1 "
        "while the hub model is not in the local Hugging Face cache: download it first, or name a local folder\n")
    assert not run.exists()


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    return huggingface_hub.constants


def _closed_port() -> int:
    """A loopback port nothing listens on: bound, then released (connections to it are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_hub_id_is_refused_when_the_hub_cannot_be_reached(tmp_path, capsys, monkeypatch, empty_hub_cache):
    """No HF_HUB_OFFLINE, no network: one line before any work, not a traceback at load time after
    retries. The hub is a loopback port where nothing listens, so the connection is really refused."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(empty_hub_cache, "ENDPOINT", endpoint)
    run = tmp_path / "run"
    assert main(["train", str(DPO), "--model.name_or_path=Qwen/Qwen2.5-0.5B", f"--train.output_dir={run}"]) == 2
    assert capsys.readouterr().err == (
        "robustpo train: error: model.name_or_path: Qwen/Qwen2.5-0.5B is not a local folder or in the local Hugging "
        f"Face cache, and the hub ({endpoint}) cannot be reached: download it first, or name a local folder\n")
    assert not run.exists()


def test_a_reachable_hub_or_proxy_lets_a_hub_id_through(monkeypatch, empty_hub_cache):
    """The check refuses only what cannot load: a hub that accepts connections passes, and so does an
    unreachable hub behind a proxy that accepts them (the proxy is what the download would use)."""
    import socket

    from robustpo.models import check_model_source

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        listening = f"http://127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setattr(empty_hub_cache, "ENDPOINT", listening)
        check_model_source("Qwen/Qwen2.5-0.5B", "model.name_or_path")            # no error
        monkeypatch.setattr(empty_hub_cache, "ENDPOINT", f"https://127.0.0.1:{_closed_port()}")
        monkeypatch.setenv("HTTPS_PROXY", listening)
        monkeypatch.setenv("NO_PROXY", "")
        check_model_source("Qwen/Qwen2.5-0.5B", "model.name_or_path")            # no error: through the proxy


@pytest.mark.parametrize("command,key", [
    (["generate", "--model", "Qwen/Qwen2.5-0.5B", "--prompts", "PROMPTS", "--out", "OUT"], "--model"),
    (["eval", "--policy", "Qwen/Qwen2.5-0.5B", "--reference", "Qwen/Qwen2.5-0.5B", "--prompts", "PROMPTS",
      "--out", "OUT"], "policy Qwen2.5-0.5B"),
])
def test_commands_that_load_a_model_refuse_an_unreachable_hub_first(tmp_path, capsys, monkeypatch, empty_hub_cache,
                                                                    command, key):
    """The same check in front of every command that loads a model (today `generate` spends ~50 s
    in the hub client's retries before failing)."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(empty_hub_cache, "ENDPOINT", endpoint)
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "hi"}\n')
    out = tmp_path / "out"
    args = [a.replace("PROMPTS", str(tmp_path / "prompts.jsonl")).replace("OUT", str(out)) for a in command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == (f"robustpo {command[0]}: error: {key}: Qwen/Qwen2.5-0.5B is not a local folder or in the local "
                   f"Hugging Face cache, and the hub ({endpoint}) cannot be reached: download it first, or name a "
                   "local folder\n")
    assert not list(tmp_path.glob("out*"))         # no output, lock or partial file
