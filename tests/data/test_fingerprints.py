"""Model-file fingerprints: one function (data.io.sampled_fingerprint) behind the reward-family
manifests and the reference log-prob cache keys, giving exactly the values the two separate
implementations gave before, so existing manifests and caches stay valid."""

import hashlib
from pathlib import Path

import pytest

from robustpo.rewards.family import tokenizer_fingerprint, weights_fingerprint
from robustpo.train.refcache import model_fingerprint


# --- the implementations as they were before the refactor (copied verbatim) ---------------

def _legacy_hash_files(paths, *, sample=None):
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        if sample is None:
            h.update(p.read_bytes())
            continue
        size = p.stat().st_size
        h.update(str(size).encode())
        with open(p, "rb") as f:
            h.update(f.read(sample))
            f.seek(max(0, size - sample))
            h.update(f.read(sample))
    return h.hexdigest()[:16]


def _legacy_weights_fingerprint(model_dir):
    weights = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin"))
    return _legacy_hash_files([model_dir / "config.json"]) + _legacy_hash_files(weights, sample=1 << 20)


def _legacy_tokenizer_fingerprint(model_dir):
    from robustpo.rewards.family import TOKENIZER_FILES

    return _legacy_hash_files([model_dir / n for n in TOKENIZER_FILES if (model_dir / n).exists()])


def _legacy_model_fingerprint(path):
    p = Path(path)
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")):
        if not f.is_file() or f.suffix not in {".json", ".safetensors", ".bin", ".model", ".txt"}:
            continue
        h.update(f.relative_to(p).as_posix().encode())
        size = f.stat().st_size
        h.update(str(size).encode())
        with open(f, "rb") as fh:
            if size <= 64 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(size - (1 << 20))
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def _model_folder(root: Path, *, big: bool) -> Path:
    """config, tokenizer files, weights small (< 1 MiB), mid (> 2 MiB) and, with `big`, one over
    64 MiB (sparse, so cheap to make) with distinct head and tail bytes."""
    root.mkdir()
    (root / "config.json").write_text('{"model_type": "llama", "num_labels": 1}\n')
    (root / "tokenizer.json").write_text('{"version": "1.0", "model": {"vocab": {"a": 0}}}\n')
    (root / "special_tokens_map.json").write_text('{"eos_token": "</s>"}\n')
    (root / "merges.txt").write_text("a b\n")
    (root / "model-00001-of-00002.safetensors").write_bytes(bytes(range(256)) * 17)
    (root / "model-00002-of-00002.safetensors").write_bytes(bytes(i * 7 % 251 for i in range(3 << 20)))
    (root / "sub").mkdir()
    (root / "sub" / "adapter.bin").write_bytes(b"\x01\x02" * 1000)
    (root / "README.md").write_text("not hashed")
    if big:
        with open(root / "pytorch_model.bin", "wb") as f:
            f.write(b"head" * 1000)
            f.seek((65 << 20) - 4000)
            f.write(b"tail" * 1000)
    return root


# computed with the legacy implementations above, before the refactor
PINNED = ("756a19844e9aef39e5bcaad8b2d06176", "53b0f81b3e331120", "d2b2c22b4f0b03a7")


@pytest.mark.parametrize("big", [False, True])
def test_fingerprints_keep_their_old_values(tmp_path, big):
    d = _model_folder(tmp_path / "m", big=big)
    assert weights_fingerprint(d) == _legacy_weights_fingerprint(d)
    assert tokenizer_fingerprint(d) == _legacy_tokenizer_fingerprint(d)
    assert model_fingerprint(str(d)) == _legacy_model_fingerprint(d)


def test_fingerprint_values_are_pinned(tmp_path):
    """The same folder always hashes to these values (a change here invalidates every family
    manifest and reference cache already on disk)."""
    d = _model_folder(tmp_path / "m", big=False)
    assert (weights_fingerprint(d), tokenizer_fingerprint(d), model_fingerprint(str(d))) == PINNED


def test_fingerprints_notice_a_changed_tail(tmp_path):
    d = _model_folder(tmp_path / "m", big=True)
    before = weights_fingerprint(d), model_fingerprint(str(d))
    with open(d / "pytorch_model.bin", "r+b") as f:
        f.seek((65 << 20) - 10)
        f.write(b"X")
    after = weights_fingerprint(d), model_fingerprint(str(d))
    assert before[0] != after[0] and before[1] != after[1]
