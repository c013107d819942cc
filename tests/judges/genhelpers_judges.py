"""Helpers for the judge tests (a uniquely named module: see tests/generate/genhelpers.py)."""

import robustpo.cli as cli


def run_cli(argv) -> int:
    """`robustpo ARGV` in this process, with only the generate/rank/label commands registered."""
    saved = list(cli.COMMAND_MODULES)
    cli.COMMAND_MODULES[:] = ["robustpo.generate.commands"]
    try:
        return cli.main([str(a) for a in argv])
    finally:
        cli.COMMAND_MODULES[:] = saved


def run_rank(url, src, out, *extra) -> int:
    return run_cli(["rank", "--judge", url, "--in", src, "--out", out, "--chunk", "1", "--no-progress",
                    "-J", "retries=1", "-J", "backoff=0.01", "-J", "backoff_max=0.05", "-J", "concurrency=2",
                    "-J", "logprobs=false", *extra])
