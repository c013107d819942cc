"""A Python function as a judge: `function:module:fn` or `function:path/to/file.py:fn`.

This is how the testbed's gold judge (and any hand-written rule) plugs in. The named
object is either

- a callable `fn(prompts, first, second) -> sequence of floats`, P(first better) per item
  in [0, 1] (bools are accepted: True = first better), or
- an object that already has a `compare` method (a Judge), used as is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from robustpo.errors import ConfigError
from robustpo.judges.base import check_probs


def import_object(target: str):
    """`package.module:attr` or `some/file.py:attr` -> the attribute (ConfigError if absent)."""
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected 'module:function' or 'file.py:function', got '{target}'")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ConfigError(f"judge file '{module_name}' does not exist")
        unique = f"_robustpo_judge_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(unique)
        if module is None:
            spec = importlib.util.spec_from_file_location(unique, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module
            spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ConfigError(f"cannot import judge module '{module_name}': {e}") from e
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module '{module_name}' has no attribute '{attr}'") from None


class FunctionJudge:
    """Wraps `fn(prompts, first, second) -> probabilities` as a Judge."""

    def __init__(self, fn, name: str):
        self.fn = fn
        self.name = name

    def compare(self, prompts: list, first: list, second: list) -> list[float]:
        out = self.fn(list(prompts), list(first), list(second))
        if hasattr(out, "tolist"):  # numpy / torch
            out = out.tolist()
        return check_probs([float(x) for x in out], len(prompts), self.name)


def load_function_judge(target: str, **options):
    if options:
        raise ConfigError(f"a function judge takes no options (got {', '.join(sorted(options))})")
    obj = import_object(target)
    if hasattr(obj, "compare"):
        if not hasattr(obj, "name"):
            obj.name = f"function:{target}"
        return obj
    if not callable(obj):
        raise ConfigError(f"'{target}' is neither callable nor a judge with a compare method")
    return FunctionJudge(obj, name=f"function:{target}")
