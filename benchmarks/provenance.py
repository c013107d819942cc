"""Which code produced a benchmark's committed results, and whether that code has changed since.

A benchmark calls `snapshot()` when it starts (the commit, and a fingerprint of every source
file under `src/robustpo/` and `benchmarks/` as it is then) and `write(out_dir, snap)` at the
end: OUT/provenance.json records the commit, the command, the wall time, and the start-time
fingerprints of the files the run imported (the script itself included). A fingerprint is the
SHA-256 of the file's syntax tree with docstrings removed, so editing a comment or a
docstring does not make results stale, while any change to what the code does does.
`stale(out_dir)` lists the files whose fingerprint no longer matches; the test suite fails on
any (tests/test_results_fresh.py), so figures made by older code cannot ship again.
"""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILE = "provenance.json"


def code_fingerprint(path: Path) -> str:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()[:16]


def imported_sources() -> list[Path]:
    """The modules of robustpo and of benchmarks/ (the running script included) this process imported."""
    roots = (REPO / "src" / "robustpo", REPO / "benchmarks")
    files = {Path(m.__file__).resolve() for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
    return sorted(p for p in files if p.suffix == ".py" and any(p.is_relative_to(r) for r in roots))


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def snapshot() -> dict:
    """The state of the code when a run starts (call it first thing)."""
    files = [p.resolve() for root in ("src/robustpo", "benchmarks") for p in (REPO / root).rglob("*.py")]
    return {"started": time.perf_counter(), "commit": _git("rev-parse", "HEAD"),
            # code files that differed from that commit when the run started
            "uncommitted_code": [ln[3:] for ln in _git("status", "--porcelain", "--", "src", "benchmarks").splitlines()
                                 if ln[3:].endswith(".py")],
            "fingerprints": {p: code_fingerprint(p) for p in files}}


def write(out_dir: Path, snap: dict, argv: list[str] | None = None, imported: list[str] | None = None) -> dict:
    """`imported`: more source files (e.g. those worker processes imported) to record."""
    roots = (REPO / "src" / "robustpo", REPO / "benchmarks")
    files = set(imported_sources()) | {p for p in map(lambda f: Path(f).resolve(), imported or [])
                                       if p.suffix == ".py" and any(p.is_relative_to(r) for r in roots)}
    record = {
        "commit": snap["commit"], "uncommitted_code": snap["uncommitted_code"],
        "command": "python " + " ".join(argv if argv is not None else sys.argv),
        "seconds": round(time.perf_counter() - snap["started"], 1),
        "files": {str(p.relative_to(REPO)): snap["fingerprints"].get(p) or code_fingerprint(p) for p in sorted(files)},
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / FILE).write_text(json.dumps(record, indent=1) + "\n")
    return record


def stale(out_dir: Path) -> list[str]:
    """Files whose code changed (or vanished) since the results in `out_dir` were made."""
    record = json.loads((Path(out_dir) / FILE).read_text())
    changed = []
    for rel, digest in record["files"].items():
        path = REPO / rel
        if not path.exists() or code_fingerprint(path) != digest:
            changed.append(rel)
    return changed
