"""`robustpo` command line: one subcommand per pipeline stage.

Each command lives beside the code it drives, in a module with
`register(subparsers)`, which adds its parser and sets `func(args) -> int`. Heavy imports
stay inside the command functions so that `robustpo --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from robustpo.errors import RobustpoError

COMMAND_MODULES = [
    "robustpo.train.commands",      # train
    "robustpo.data.commands",       # validate
    "robustpo.generate.commands",   # generate, rank, label
    "robustpo.eval.commands",       # eval, report
    "robustpo.testbed.commands",    # testbed
    "robustpo.testbed.demo",        # demo
    "robustpo.rewards.commands",    # reward train | family | score
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustpo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def quiet_libraries() -> None:
    """Hide transformers' own progress bars ("Loading weights" at every model load, "Writing
    model shards" at every save), which flood every command; robustpo's own bars and lines
    stay (they honour TQDM_DISABLE). transformers reads HF_HUB_DISABLE_PROGRESS_BARS when it is
    imported, which costs nothing to set now; if it is imported already (main() called in a
    process that has used it), it is told directly. A user's own HF_HUB_DISABLE_PROGRESS_BARS=0
    keeps the bars."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"].upper() in ("1", "ON", "YES", "TRUE"):
        hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # Commands that take --section.key=value overrides get the unparsed rest; others reject it.
    if getattr(args, "_allow_overrides", False):
        args.overrides = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return int(args.func(args) or 0)
    except RobustpoError as e:
        print(f"robustpo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robustpo {args.command}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
