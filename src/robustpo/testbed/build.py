"""Build (or load from cache) everything the testbed experiments need.

    tb = build(TestbedConfig(seed=0, rhos=(0.2,)))
    tb.reference_path          # a save_pretrained folder: the reference policy
    tb.dataset(0.2)            # JSONL of canonical preference rows, 20% longer-preferred
    tb.validation_path         # unbiased gold-labelled pairs (hyperparameter selection)
    tb.test_prompts_path       # held-out prompts for `robustpo eval`
    tb.gold_rewards_spec       # "robustpo.testbed.task:gold_rewards" for --gold

Caching: two stages, each in a folder named by a fingerprint of the settings it depends on
and of the testbed's own source code. Changing pair settings reuses the reference policy;
asking for a new ρ only subsamples the cached pool. Every file is written atomically and
`manifest.json` last, so a killed build leaves no stage that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from robustpo.data.io import file_fingerprint, fingerprint, read_records, write_json_atomic, write_jsonl_atomic
from robustpo.testbed import pairs as pairs_mod
from robustpo.testbed import task

# Code each stage depends on: editing it invalidates that stage's cache (and those after it).
# The reference trains through train/sft.py on train/loop.py's run_loop: their code is part of its key.
_REFERENCE_SOURCES = [*(Path(__file__).with_name(n) for n in ("task.py", "reference.py")),
                      *(Path(__file__).parent.parent / "train" / n for n in ("sft.py", "loop.py"))]
_PAIRS_SOURCES = [Path(__file__).with_name(n) for n in ("pairs.py", "build.py")]


def default_cache_dir() -> Path:
    return Path(os.environ.get("ROBUSTPO_CACHE", Path.home() / ".cache" / "robustpo")) / "testbed"


@dataclass(frozen=True)
class TestbedConfig:
    __test__ = False  # not a pytest test class despite the name

    seed: int = 0
    # reference policy
    n_demonstrations: int = 6000
    reference_steps: int = 700      # ~35 s on 2 busy CPU cores
    reference_batch_size: int = 64
    reference_lr: float = 4e-3
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    # preference data
    n_train_pairs: int = 512        # size of every ρ dataset
    rhos: tuple[float, ...] = (0.2,)
    # pool prompts = pool_factor * n_train_pairs: 16 leaves enough shorter-preferred pairs for
    # ρ = 0.2 sets of 2,048 pairs (the robustness grid's data-size dimension)
    pool_factor: float = 16.0
    # 1,024 unbiased pairs: the precondition (a family's accuracy on them) has a standard error
    # of about 0.015, small enough to tell reward models apart
    n_validation_pairs: int = 1024
    n_test_prompts: int = 256       # 1 sample each: win-rate CI half-width ≈ ±0.06
    deterministic_labels: bool = False
    max_new_tokens: int = 12        # demonstrations have at most 6 words
    n_reference_samples: int = 0    # extra reference samples per row (`reference_samples` column)
    cache_dir: str | None = field(default=None, compare=False)

    @classmethod
    def quick(cls, **overrides) -> "TestbedConfig":
        """A smaller testbed for tests and `--quick` runs (reference in ~10 s)."""
        base = dict(n_demonstrations=2000, reference_steps=250, reference_batch_size=32, n_train_pairs=128,
                    n_validation_pairs=64, n_test_prompts=64)
        return cls(**{**base, **overrides})

    def reference_key(self) -> str:
        keys = ("seed", "n_demonstrations", "reference_steps", "reference_batch_size", "reference_lr",
                "hidden_size", "num_layers", "num_heads")
        return fingerprint({k: getattr(self, k) for k in keys}, [file_fingerprint(p) for p in _REFERENCE_SOURCES])

    def pairs_key(self) -> str:
        keys = ("n_train_pairs", "pool_factor", "n_validation_pairs", "n_test_prompts",
                "deterministic_labels", "max_new_tokens", "n_reference_samples")
        return fingerprint(self.reference_key(), {k: getattr(self, k) for k in keys},
                           [file_fingerprint(p) for p in _PAIRS_SOURCES])


@dataclass
class Testbed:
    __test__ = False

    config: TestbedConfig
    root: Path                  # the pairs stage folder
    reference_path: Path
    pool_path: Path             # every gold-labelled pair, unbiased (the source of ρ datasets)
    validation_path: Path       # unbiased gold-labelled pairs on other prompts
    test_prompts_path: Path     # rows {"prompt": ...}
    stats: dict
    gold_rewards_spec: str = "robustpo.testbed.task:gold_rewards"   # fn(prompts, responses)
    gold_judge_spec: str = "robustpo.testbed.task:gold_judge"       # fn(prompts, first, second)

    def dataset(self, rho: float, size: int | None = None) -> Path:
        """Path of the ρ-biased training set (built on first request, then cached)."""
        size = size or self.config.n_train_pairs
        path = self.root / f"train_rho{rho:.3f}_n{size}.jsonl"
        if not path.exists():
            rng = task.seeded_rng(self.config.seed, f"bias/{rho:.6f}/{size}")
            write_jsonl_atomic(path, pairs_mod.biased_subsample(read_records(self.pool_path), rho, size, rng))
        return path

    @property
    def train_paths(self) -> dict[float, Path]:
        return {rho: self.dataset(rho) for rho in self.config.rhos}

    def test_prompts(self) -> list[str]:
        return [r["prompt"] for r in read_records(self.test_prompts_path)]

    def evaluate(self, policies: dict[str, str | Path], *, rho: float | None = None,
                 train_pairs: dict[str, list[dict]] | list[dict] | None = None,
                 log: Callable[[str], None] = print, **settings) -> dict:
        """`robustpo.eval.evaluate_policies` on the held-out test prompts with the gold reward.

        `rho`: take the Δ(w), Δ(l) diagnostic on that ρ dataset (or pass `train_pairs`).
        `settings`: EvalSettings fields; max_new_tokens and seed default to the testbed's.
        """
        from robustpo.eval.evaluate import EvalSettings, evaluate_policies

        settings.setdefault("max_new_tokens", self.config.max_new_tokens)
        settings.setdefault("seed", self.config.seed)
        if train_pairs is None and rho is not None:
            train_pairs = read_records(self.dataset(rho))
        return evaluate_policies(policies, self.reference_path, self.test_prompts(), gold_fn=task.gold_rewards,
                                 train_pairs=train_pairs, settings=EvalSettings(**settings), log=log)


def language_model(config: TestbedConfig, *, log: Callable[[str], None] = print) -> Path:
    """The reference stage alone (cached): an LM SFT'd on the seed's demonstrations with the
    config's width. `replace(config, hidden_size=128)` gives a wider backbone for reward models."""
    ref_root = _reference_root(config)
    if not (ref_root / "manifest.json").exists():
        with _exclusive(ref_root / ".lock"):  # parallel runs (a grid) wait here instead of racing
            if not (ref_root / "manifest.json").exists():
                _build_reference(config, ref_root, log)
    return ref_root / "model"


def _reference_root(config: TestbedConfig) -> Path:
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    return cache / f"reference-{config.reference_key()}"


def build(config: TestbedConfig | None = None, *, log: Callable[[str], None] = print) -> Testbed:
    """Build the testbed stages that are not cached yet; return their paths."""
    config = config or TestbedConfig()
    ref_root = _reference_root(config)
    root = ref_root / f"pairs-{config.pairs_key()}"
    if not (root / "manifest.json").exists():
        language_model(config, log=log)
        with _exclusive(ref_root / ".lock"):
            if not (root / "manifest.json").exists():
                _build_pairs(config, ref_root / "model", root, log)
    stats = {**json.loads((ref_root / "manifest.json").read_text()), **json.loads((root / "manifest.json").read_text())}
    tb = Testbed(config, root, ref_root / "model", root / "pool.jsonl", root / "validation.jsonl",
                 root / "test_prompts.jsonl", stats)
    for rho in config.rhos:
        tb.dataset(rho)
    return tb


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """An advisory inter-process lock (POSIX); a no-op where fcntl does not exist."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_reference(config: TestbedConfig, ref_root: Path, log) -> None:
    import shutil

    from robustpo.testbed.reference import train_reference

    rng = task.seeded_rng(config.seed, "demonstrations")
    prompts = task.generate_prompts(config.n_demonstrations, rng)
    demos = [task.demonstration(p, rng) for p in prompts]
    log(f"testbed: training the reference policy ({config.reference_steps} steps on "
        f"{len(demos)} demonstrations)")
    for stale in ref_root.glob(".model-*.tmp"):  # left by a killed build (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = ref_root / f".model-{os.getpid()}.tmp"
    stats = train_reference(prompts, demos, tmp, seed=config.seed, steps=config.reference_steps,
                            batch_size=config.reference_batch_size, lr=config.reference_lr,
                            hidden_size=config.hidden_size, num_layers=config.num_layers,
                            num_heads=config.num_heads, log_every=max(1, config.reference_steps // 4), log=log)
    if (ref_root / "model").exists():  # a half-finished earlier build: its manifest is missing
        shutil.rmtree(ref_root / "model")
    os.replace(tmp, ref_root / "model")
    log(f"testbed: reference trained in {stats['seconds']:.1f} s, final SFT loss {stats['final_loss']:.3f}")
    write_json_atomic(ref_root / "manifest.json", {"reference": stats, "demonstration_gold_reward":
                      float(np.mean(task.gold_rewards(prompts, demos)))})


def _build_pairs(config: TestbedConfig, reference_path: Path, root: Path, log) -> None:
    from robustpo.testbed.reference import one_thread

    with one_thread():  # sampled tokens depend on the logits' last bits, hence on the thread count
        _sample_and_label(config, reference_path, root, log)


def _sample_and_label(config: TestbedConfig, reference_path: Path, root: Path, log) -> None:
    from robustpo.generate.sampling import sample_responses
    from robustpo.models import load_for_inference

    started = time.perf_counter()
    model, tokenizer = load_for_inference(reference_path)

    extra = config.n_reference_samples + 2 if config.n_reference_samples else 0  # spares for empty samples

    def sample_pairs(stream: str, n_prompts: int) -> tuple[list[str], list[str], list[str], list[list[str]]]:
        prompts = task.generate_prompts(n_prompts, task.seeded_rng(config.seed, stream))
        per = 2 + extra
        samples = sample_responses(model, tokenizer, prompts, n=per, max_new_tokens=config.max_new_tokens,
                                   seed=config.seed, batch_size=512)
        texts = [s.text for s in samples]
        extras = [[t for t in texts[i * per + 2:(i + 1) * per] if t.strip()] for i in range(n_prompts)]
        return prompts, texts[0::per], texts[1::per], extras

    def labelled(prompts, a, b, extras, stream) -> list[dict]:
        rng = task.seeded_rng(config.seed, stream)
        rows = []
        for p, x, y, more in zip(prompts, a, b, extras):
            row = pairs_mod.label_pair(p, x, y, rng, deterministic=config.deterministic_labels)
            if row is None or len(more) < config.n_reference_samples:
                continue
            if config.n_reference_samples:
                # Fresh reference samples of the prompt: with them the training loop estimates
                # KL(π_ref‖π_θ) without trusting the (biased-by-selection) pair responses.
                row["reference_samples"] = more[:config.n_reference_samples]
            rows.append(row)
        return rows

    pool_prompts, a, b, pool_extra = sample_pairs("pool", int(config.pool_factor * config.n_train_pairs))
    pool = labelled(pool_prompts, a, b, pool_extra, "pool-labels")
    val_prompts, va, vb, val_extra = sample_pairs("validation", int(config.n_validation_pairs * 1.1) + 8)
    validation = labelled(val_prompts, va, vb, val_extra, "val-labels")[:config.n_validation_pairs]
    test_prompts = task.generate_prompts(config.n_test_prompts, task.seeded_rng(config.seed, "test"))

    rng = task.seeded_rng(config.seed, "random-baseline")
    random_gold = task.gold_rewards(pool_prompts, [task.random_response(rng) for _ in pool_prompts])
    samples_gold = task.gold_rewards(pool_prompts + pool_prompts, a + b)
    stats = {
        "pool_pairs": len(pool),
        "pool_longer_preferred_rate": pairs_mod.longer_preferred_rate(pool),
        "reference_gold_reward": float(np.mean(samples_gold)),
        "reference_length": float(np.mean([len(t.split()) for t in a + b])),
        "random_gold_reward": float(np.mean(random_gold)),
        "length_gold_correlation": float(np.corrcoef([len(t.split()) for t in a + b], samples_gold)[0, 1]),
        "pairs_seconds": time.perf_counter() - started,
        # rhos are not part of this stage (any ρ is subsampled from the pool on request).
        "config": {k: v for k, v in asdict(config).items() if k not in ("cache_dir", "rhos")},
    }
    write_jsonl_atomic(root / "pool.jsonl", pool)
    write_jsonl_atomic(root / "validation.jsonl", validation)
    write_jsonl_atomic(root / "test_prompts.jsonl", [{"prompt": p} for p in test_prompts])
    write_json_atomic(root / "manifest.json", stats)
    log(f"testbed: {len(pool)} gold-labelled pairs (longer preferred in "
        f"{stats['pool_longer_preferred_rate']:.0%} of unequal-length pairs), reference gold reward "
        f"{stats['reference_gold_reward']:.2f} vs random {stats['random_gold_reward']:.2f}, "
        f"in {stats['pairs_seconds']:.1f} s")


def with_overrides(config: TestbedConfig, **overrides) -> TestbedConfig:
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
