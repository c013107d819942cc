"""Helpers shared by the tests in tests/generate (a uniquely named module: `conftest`
is ambiguous when several test folders have one)."""

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent

# A subprocess `robustpo` with only this package's commands registered: the same parser and
# error handling as the real CLI, without paying every other command module's import time
# on each start (the kill tests start it twice).
CLI_ENTRY = ("import sys, robustpo.cli as c; c.COMMAND_MODULES[:] = ['robustpo.generate.commands']; "
             "sys.exit(c.main(sys.argv[1:]))")


def run_cli(argv: list[str]) -> int:
    """`robustpo ARGV` in this process, with every command module this checkout has."""
    import robustpo.cli as cli

    saved = list(cli.COMMAND_MODULES)
    cli.COMMAND_MODULES[:] = [m for m in saved if importlib.util.find_spec(m)]
    try:
        return cli.main([str(a) for a in argv])
    finally:
        cli.COMMAND_MODULES[:] = saved


def cli_command(argv: list[str]) -> list[str]:
    return [sys.executable, "-c", CLI_ENTRY, *[str(a) for a in argv]]


def read_jsonl(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def write_jsonl(path, rows) -> Path:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Path(path)


PROMPT_TEXTS = ["Question: what is 2 plus 3?\nAnswer:", "Question: what is 7 plus 1?\nAnswer:",
                "Tell me about cats.", "Tell me about dogs.", "Question: what is 4 plus 4?\nAnswer:"]
