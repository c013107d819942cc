"""Judge functions for the rank/label tests (loaded as function:FILE.py:NAME).

Truth: the longer response is better; equal lengths tie.
"""

import json
import os
import time


def longer_is_better(prompts, first, second):
    return [1.0 if len(a) > len(b) else 0.0 if len(a) < len(b) else 0.5 for a, b in zip(first, second)]


def slow_logged_longer(prompts, first, second):
    """Like longer_is_better, but slow, and logging each judged prompt to $RANK_CALL_LOG."""
    time.sleep(0.05)
    with open(os.environ["RANK_CALL_LOG"], "a") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p, "run": os.environ.get("RUN", "")}) + "\n")
    return longer_is_better(prompts, first, second)


def always_tie(prompts, first, second):
    return [0.5] * len(prompts)


def blocked_longer(prompts, first, second):
    """Like longer_is_better, but first touches $JUDGE_STARTED and waits for $JUDGE_RELEASE to exist."""
    from pathlib import Path

    Path(os.environ["JUDGE_STARTED"]).touch()
    deadline = time.time() + 60
    while not Path(os.environ["JUDGE_RELEASE"]).exists() and time.time() < deadline:
        time.sleep(0.02)
    return longer_is_better(prompts, first, second)


def fails_on_prompt(prompts, first, second):
    """Like longer_is_better, but raises (as a dead judge would) when a prompt equals $FAIL_PROMPT."""
    from robustpo.judges.base import JudgeError

    if os.environ.get("FAIL_PROMPT") in prompts:
        raise JudgeError(f"judge failed on {os.environ['FAIL_PROMPT']}")
    return longer_is_better(prompts, first, second)
