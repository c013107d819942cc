"""Reward-model families: K reward models behind one `score(prompts, responses) -> (N, K)`.

A family folder holds `family.json` and its members. A member is one output column of a
`transformers` sequence-classification model: an ordinary reward model (num_labels=1,
column 0), or one head of a multi-head model (num_labels=K, K members sharing a backbone,
column k). Manifest (`family.json`):

    {"format": "robustpo.reward_family", "version": 1, "mode": "seed|bootstrap|subsets|multihead|assembled",
     "max_length": 512, "max_prompt_length": 256,
     "confound": {"feature": "length", "mean": 3.9, "std": 1.6},      # when one was named
     "members": [{"name": "member-0", "path": "members/member-0", "head": 0,
                  "tokenizer": "<hash>", "weights": "<hash>", "confound_coef": 0.0,
                  "made": {...how it was trained...}, "data": {...its pairs...}, "heldout": {...metrics...}}],
     "heldout": {...family metrics and disagreement...}}

`head` is the member's output column. A member's reward is its model's pooled score (the
model's config.json says how: rewards/pooling.py; a plain last-token score model says
nothing) plus, for the members of a
`span` family, `confound_coef · φ̃(x, y)`, φ̃ the confound standardised with the family's
statistics (rewards/confound.py); `confound_coef` is 0 (or absent) for every other member.

`path` is relative to the family folder (or absolute for members assembled in place).
Loading checks the manifest against the folders (a missing member, a changed model, a
tokenizer that differs between members) before any scoring, and names the member at fault.
All members must share one tokenizer: texts are tokenized and truncated once for the
whole family, so every member judges exactly the same tokens.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch

from robustpo.errors import RobustpoError

MANIFEST = "family.json"
FORMAT = "robustpo.reward_family"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "vocab.txt", "chat_template.jinja")


class FamilyError(RobustpoError):
    """A family folder, manifest or member that cannot be used as it is."""


@contextlib.contextmanager
def quiet_transformers():
    """Hide loading chatter: the 'newly initialized score weights' warning (expected when a causal
    LM becomes a reward model) and a progress bar per model of a family."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def tokenizer_fingerprint(model_dir: Path) -> str:
    """Names and bytes of the tokenizer files."""
    from robustpo.data.io import sampled_fingerprint

    return sampled_fingerprint((n, model_dir / n) for n in TOKENIZER_FILES if (model_dir / n).exists())


def weights_fingerprint(model_dir: Path) -> str:
    """config.json plus each weight file's size and first and last MiB: cheap for multi-GB
    models, yet a retrained or swapped member (whose weights differ everywhere) no longer matches."""
    from robustpo.data.io import sampled_fingerprint

    weights = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin"))
    return (sampled_fingerprint([("config.json", model_dir / "config.json")])
            + sampled_fingerprint(((p.name, p) for p in weights), sample=1 << 20))


def read_model_config(model_dir: Path) -> dict:
    try:
        return json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FamilyError(f"{model_dir}: unreadable config.json ({e})") from None


def model_num_labels(model_dir: Path) -> int:
    """Output columns of a reward model: a likelihood (`lm` head) model has one; a
    sequence-classification config has num_labels (transformers saves them as id2label)."""
    from robustpo.rewards.pooling import reward_spec

    config = read_model_config(model_dir)
    if reward_spec(config)["head"] == "lm":
        return 1
    return int(config.get("num_labels") or len(config.get("id2label") or {}) or 2)


def member_entry(family_dir: Path, model_dir: Path, head: int, name: str, **extra) -> dict:
    """A manifest entry for column `head` of the model in `model_dir`."""
    model_dir = Path(model_dir)
    try:
        path = os.path.relpath(model_dir.resolve(), Path(family_dir).resolve())
        path = str(model_dir.resolve()) if path.startswith("..") else path
    except ValueError:  # another drive (Windows)
        path = str(model_dir.resolve())
    return {"name": name, "path": path, "head": head, "tokenizer": tokenizer_fingerprint(model_dir),
            "weights": weights_fingerprint(model_dir), **extra}


def write_manifest(family_dir: Path, manifest: dict) -> None:
    from robustpo.data.io import write_json_atomic

    write_json_atomic(Path(family_dir) / MANIFEST, {"format": FORMAT, "version": 1, **manifest})


def single_model_manifest(model_dir: Path) -> dict:
    """A folder holding one reward model is a family of its num_labels columns (usually 1)."""
    k = model_num_labels(model_dir)
    members = [member_entry(model_dir, model_dir, h, "reward" if k == 1 else f"head-{h}") for h in range(k)]
    return {"format": FORMAT, "version": 1, "mode": "single", "members": members}


def read_manifest(family_dir: Path) -> dict:
    family_dir = Path(family_dir)
    if not family_dir.is_dir():
        raise FamilyError(f"{family_dir}: no such family folder")
    path = family_dir / MANIFEST
    if not path.exists():
        if (family_dir / "config.json").exists():
            return single_model_manifest(family_dir)
        raise FamilyError(f"{family_dir}: neither a family folder (no {MANIFEST}) nor a reward model (no config.json)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FamilyError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise FamilyError(f"{path}: not a robustpo family manifest (expected \"format\": \"{FORMAT}\")")
    members = manifest.get("members")
    if not isinstance(members, list) or not members:
        raise FamilyError(f"{path}: 'members' must be a non-empty list")
    if "size" in manifest and manifest["size"] != len(members):
        raise FamilyError(f"{path}: says size {manifest['size']} but lists {len(members)} members")
    for i, m in enumerate(members):
        missing = [k for k in ("name", "path", "head", "tokenizer", "weights") if k not in m]
        if missing:
            raise FamilyError(f"{path}: member {i} lacks {', '.join(missing)}")
    names = [m["name"] for m in members]
    if len(set(names)) != len(names):
        raise FamilyError(f"{path}: member names repeat: {names}")
    return manifest


def check_members(family_dir: Path, manifest: dict, *, pairwise: bool = False) -> list[Path]:
    """The member folders, after checking each against its manifest entry. Raises FamilyError.
    `pairwise`: the members must be pairwise preference models (rewards/pairwise.py), else must not."""
    from robustpo.rewards.pairwise import PAIRWISE_FILE

    where = Path(family_dir) / MANIFEST
    dirs, tokenizers = [], {}
    for m in manifest["members"]:
        d = (Path(family_dir) / m["path"]) if not os.path.isabs(m["path"]) else Path(m["path"])
        label = f"member '{m['name']}' ({d})"
        if not (d / "config.json").exists():
            raise FamilyError(f"{where}: {label} is missing (no model folder there)")
        if (d / PAIRWISE_FILE).exists() != pairwise:
            raise FamilyError(f"{where}: {label} is a pairwise preference model: it compares two responses and has "
                              "no pointwise score; use it as the judge pairwise:PATH (robustpo rank / label)"
                              if not pairwise else f"{where}: {label} is not a pairwise preference model (no "
                              f"{PAIRWISE_FILE}); use a Bradley–Terry model as reward:PATH / family:PATH")
        k = model_num_labels(d)
        if not isinstance(m["head"], int) or not 0 <= m["head"] < k:
            raise FamilyError(f"{where}: {label} uses head {m['head']}, but that model has {k} output(s)")
        if weights_fingerprint(d) != m["weights"]:
            raise FamilyError(f"{where}: {label} does not match the manifest (its config or weight files changed "
                              "since the family was written); rebuild the manifest with `robustpo reward family`")
        tok = tokenizer_fingerprint(d)
        if tok != m["tokenizer"]:
            raise FamilyError(f"{where}: {label}: its tokenizer changed since the manifest was written")
        tokenizers.setdefault(tok, []).append(m["name"])
        dirs.append(d)
    if len(tokenizers) > 1:
        groups = "; ".join(", ".join(v) for v in tokenizers.values())
        raise FamilyError(f"{where}: members have mismatched tokenizers ({groups}); a family scores the same "
                          "tokens with every member, so all members need the same tokenizer")
    return dirs


def encode_texts(tokenizer, prompts: list, responses: list, *, max_length: int, max_prompt_length: int,
                 with_prompt_lengths: bool = False):
    """prompt + response token ids, by the rule `data.tokenize.tokenize_pairs` uses for training:
    string prompts get the tokenizer's BOS (if it adds one), string responses an EOS; messages go
    through the chat template; a long prompt keeps its last `max_prompt_length` tokens, then the
    response keeps its first `max_length − len(prompt)`. With `with_prompt_lengths`, returns
    (ids, prompt token counts)."""
    from robustpo.data.tokenize import SpecialTokens, encode_ids, render_texts

    rendered = [render_texts({"prompt": p, "chosen": r, "rejected": r, "index": i}, tokenizer)
                for i, (p, r) in enumerate(zip(prompts, responses))]
    p_ids = tokenizer([p for p, *_ in rendered], add_special_tokens=False)["input_ids"]
    r_ids = tokenizer([r for _, r, _, _ in rendered], add_special_tokens=False)["input_ids"]
    specials = SpecialTokens.of(tokenizer)
    out, prompt_lengths = [], []
    for (_, _, _, templated), p, r in zip(rendered, p_ids, r_ids):
        p, (r,), _, _ = encode_ids(p, [r], specials, templated=templated, max_length=max_length,
                                   max_prompt_length=max_prompt_length)
        out.append(p + r)
        prompt_lengths.append(len(p))
    return (out, prompt_lengths) if with_prompt_lengths else out


class RewardFamily:
    """K reward models (members in manifest order); `score` returns a (N, K) float32 tensor."""

    def __init__(self, path: Path, manifest: dict, *, batch_size: int = 16, device: str = "cpu",
                 max_length: int | None = None, dtype: str = "float32"):
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

        from robustpo.models import torch_dtype
        from robustpo.rewards.pooling import HEADS, POOLINGS, reward_spec

        self.path, self.manifest = Path(path), manifest
        self.members: list[dict] = manifest["members"]
        self.name = str(path)
        dirs = check_members(self.path, manifest)
        self.max_length = int(max_length or manifest.get("max_length", 512))
        self.max_prompt_length = int(manifest.get("max_prompt_length", self.max_length // 2))
        self.max_prompt_length = min(self.max_prompt_length, self.max_length - 1)
        self.batch_size, self.device = int(batch_size), device
        self.confound: dict | None = manifest.get("confound")
        self.confound_coefs = [float(m.get("confound_coef") or 0.0) for m in self.members]
        if any(self.confound_coefs) and not self.confound:
            raise FamilyError(f"{self.path / MANIFEST}: members add a confound term but the manifest names no "
                              "confound (feature and statistics)")
        self.tokenizer = AutoTokenizer.from_pretrained(dirs[0])
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Members that share a model folder (the heads of a multi-head model, the weights of a
        # span family) share one loaded model and one forward.
        self._models: dict[str, tuple[object, dict]] = {}    # folder -> (model, reward spec)
        self._columns: list[tuple[str, int]] = []
        for m, d in zip(self.members, dirs):
            key = str(d.resolve())
            if key not in self._models:
                spec = reward_spec(read_model_config(d))
                if spec["head"] not in HEADS or spec["pooling"] not in POOLINGS:
                    raise FamilyError(f"member '{m['name']}' ({d}): unknown reward head/pooling {spec}")
                auto = AutoModelForCausalLM if spec["head"] == "lm" else AutoModelForSequenceClassification
                try:
                    with quiet_transformers():
                        model = auto.from_pretrained(d, dtype=torch_dtype(dtype))
                except (OSError, ValueError) as e:
                    raise FamilyError(f"member '{m['name']}' ({d}): cannot load: {e}") from None
                model.config.pad_token_id = self.tokenizer.pad_token_id
                self._models[key] = (model.to(device).eval(), spec)
            self._columns.append((key, m["head"]))

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def names(self) -> list[str]:
        return [m["name"] for m in self.members]

    def fingerprint(self) -> str:
        from robustpo.data.io import fingerprint

        return fingerprint([(m["weights"], m["head"], m["tokenizer"], m.get("confound_coef") or 0.0)
                            for m in self.members], self.max_length,
                           self.max_prompt_length, self.confound)

    def encode(self, prompts: list, responses: list) -> tuple[list[list[int]], list[int]]:
        """Token ids of prompt + response as every member sees them, and the prompt token counts."""
        return encode_texts(self.tokenizer, list(prompts), list(responses), max_length=self.max_length,
                            max_prompt_length=self.max_prompt_length, with_prompt_lengths=True)

    def confound_values(self, prompts: list, responses: list, *, feature: str | None = None,
                        encoded: tuple | None = None, row_ids: list | None = None) -> torch.Tensor:
        """(N,) φ of each response: the family's confound standardised with its training statistics,
        or the raw `feature` (default `length`) for a family that names none."""
        from robustpo.rewards.confound import feature_values, standardize

        ids, prompt_lengths = encoded or self.encode(prompts, responses)
        spec = feature or (self.confound or {}).get("feature", "length")
        rows = [r - 1 for r in row_ids] if row_ids is not None else None
        raw = feature_values(spec, prompts, responses, [len(t) - p for t, p in zip(ids, prompt_lengths)], rows=rows)
        if self.confound and spec == self.confound["feature"] and "std" in self.confound:
            raw = standardize(raw, self.confound)
        return torch.tensor(raw, dtype=torch.float32)

    @torch.no_grad()
    def score(self, prompts: list, responses: list, *, row_ids: list | None = None) -> torch.Tensor:
        """Rewards r_k(x_i, y_i): (N, K) float32, members in manifest order.

        prompts, responses: N strings or message lists. Batches are formed from texts of
        similar length (less padding) and results returned in input order. `row_ids` name the
        rows (1-based) in a non-finite-reward or confound-feature error (default: positions 1..N).
        """
        from robustpo.rewards.pooling import response_rewards

        if len(prompts) != len(responses):
            raise FamilyError(f"score: {len(prompts)} prompts but {len(responses)} responses")
        ids, prompt_lengths = self.encode(prompts, responses)
        out = torch.empty(len(ids), self.size)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            T = max(len(ids[i]) for i in chunk)
            input_ids = torch.full((len(chunk), T), pad, dtype=torch.long)      # (b, T), right padding
            mask = torch.zeros((len(chunk), T), dtype=torch.long)               # (b, T)
            response = torch.zeros((len(chunk), T), dtype=torch.long)           # (b, T)
            for j, i in enumerate(chunk):
                input_ids[j, :len(ids[i])] = torch.tensor(ids[i])
                mask[j, :len(ids[i])] = 1
                response[j, prompt_lengths[i]:len(ids[i])] = 1
            input_ids, mask, response = input_ids.to(self.device), mask.to(self.device), response.to(self.device)
            rewards = {key: spec["scale"] * response_rewards(model, input_ids, mask, response, head=spec["head"],
                                                             pooling=spec["pooling"]).cpu()     # (b, labels)
                       for key, (model, spec) in self._models.items()}
            out[chunk] = torch.stack([rewards[key][:, head] for key, head in self._columns], dim=1)
        if any(self.confound_coefs):
            phi = self.confound_values(prompts, responses, encoded=(ids, prompt_lengths), row_ids=row_ids)  # (N,)
            out = out + phi[:, None] * torch.tensor(self.confound_coefs)[None, :]
        bad = ~torch.isfinite(out)
        if bad.any():
            i, k = (int(v) for v in bad.nonzero()[0])
            row = row_ids[i] if row_ids is not None else i
            raise FamilyError(f"member '{self.members[k]['name']}' gave a non-finite reward ({out[i, k].item()}) "
                              f"for row {row}: its weights are likely broken (NaN/inf); nothing was written for "
                              "this batch")
        return out


def load_family(path, *, batch_size: int = 16, device: str = "cpu", max_length: int | None = None,
                dtype: str = "float32") -> RewardFamily:
    """Load a family folder (with family.json) or a single reward-model folder (K = num_labels)."""
    path = Path(path)
    return RewardFamily(path, read_manifest(path), batch_size=batch_size, device=device, max_length=max_length,
                        dtype=dtype)


def assemble_family(member_dirs: list, out_dir, *, copy: bool = False, max_length: int | None = None,
                    max_prompt_length: int | None = None) -> Path:
    """Write a family folder from reward models trained elsewhere (or from other families).

    Each item is a reward-model folder (all its output columns become members) or a family
    folder (its members, in order). With `copy`, member folders are copied under
    OUT/members/; otherwise the manifest points at them where they are. Pairwise models
    (rewards/pairwise.py) assemble the same way into a pairwise family; the kinds never mix.
    """
    import shutil

    from robustpo.rewards.pairwise import PAIRWISE_FILE, TEMPLATE, is_pairwise_folder

    out_dir = Path(out_dir)
    # Pairwise models (rewards/pairwise.py) assemble into a pairwise family; the two kinds never mix.
    kinds = {Path(src): is_pairwise_folder(src) for src in member_dirs}
    pairwise = any(kinds.values())
    if pairwise and not all(kinds.values()):
        raise FamilyError("cannot assemble Bradley–Terry and pairwise models into one family (pairwise: "
                          + ", ".join(str(k) for k, v in kinds.items() if v) + "; Bradley–Terry: "
                          + ", ".join(str(k) for k, v in kinds.items() if not v) + ")")
    out_dir.mkdir(parents=True, exist_ok=True)
    found, lengths = [], []   # (name, folder, manifest entry, source) of every member, in order
    for src in map(Path, member_dirs):
        manifest = read_manifest(src)
        dirs = check_members(src, manifest, pairwise=pairwise)
        if pairwise and not (src / MANIFEST).exists():   # one saved pairwise model: its limits are in its spec
            manifest = {**manifest, **{k: v for k, v in json.loads((src / PAIRWISE_FILE).read_text()).items()
                                       if k in ("max_length", "max_prompt_length")}}
        lengths.append((manifest.get("max_length"), manifest.get("max_prompt_length")))
        for m, d in zip(manifest["members"], dirs):
            found.append((m["name"] if manifest.get("mode") != "single" else src.name, d, m, src))
    seen: dict[str, int] = {}
    named = []
    for name, d, m, src in found:
        seen[name] = seen.get(name, 0) + 1   # names must be unique: two folders both called "final"
        named.append((name if seen[name] == 1 else f"{name}-{seen[name]}", d, m, src))

    def manifest_for(folders):
        known = [v for v in lengths if v[0] is not None]
        members = [member_entry(out_dir, folders[str(d)], m["head"], name, source=str(src),
                                **{k: v for k, v in m.items() if k not in ("name", "path", "head", "tokenizer",
                                                                              "weights")})
                   for name, d, m, src in named]
        return {**({"kind": "pairwise", "template": TEMPLATE} if pairwise else {}), "mode": "assembled",
                "size": len(members), "max_length": max_length or (known[0][0] if known else 512),
                "max_prompt_length": max_prompt_length or (known[0][1] if known else 256), "members": members}

    folders = {str(d): d for _, d, _, _ in named}
    manifest = manifest_for(folders)
    check_members(out_dir, manifest, pairwise=pairwise)  # mismatched tokenizers fail here, before any copy or write
    if copy:  # one copy per model folder (the heads of a multi-head model share theirs)
        for name, d, _, _ in named:
            if folders[str(d)] == d:
                folders[str(d)] = out_dir / "members" / name
                if not folders[str(d)].exists():
                    shutil.copytree(d, folders[str(d)])
        manifest = manifest_for(folders)
    write_manifest(out_dir, manifest)
    return out_dir
