"""Paths and small data shared by tests (imported by name; pytest puts tests/ on sys.path)."""

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HH_DATA = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
TINY_PAIRS = REPO / "recipes" / "tiny" / "data" / "pairs.jsonl"


def pair_texts():
    rows = [json.loads(line) for line in TINY_PAIRS.read_text().splitlines()]
    return [r["prompt"] + r["chosen"] + r["rejected"] for r in rows]
