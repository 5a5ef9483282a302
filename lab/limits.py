"""The limits every setting is checked against before a job starts, in one place.

RunConfig.validate (run settings and the objective's params), EvalSpec.problems, the
next-token reasoning job's settings, the corpus reader and the CLI's numeric options use them,
so a value that a later stage could not hold (a 32-bit store column, a seed numpy refuses, a
batch no machine can fit, a NaN) is refused up front with a message naming the setting, never
discovered by the job.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any

INT32_MAX = 2**31 - 1          # DuckDB INTEGER columns: runs.step/max_steps, metrics.step, ...
SEED_MAX = 2**32 - 1           # numpy's seed range (accelerate's set_seed seeds numpy too);
                               # the loop's seed * 100_003 + epoch stays far inside torch's
MAX_BATCH_TOKENS = 2**20       # batch_size x seq_len of one micro-batch (use grad_accum beyond)
MAX_SEQ_LEN = 8192
MAX_CORPUS_BYTES = 4 * 2**30   # a corpus file is read whole
MAX_LOG_LINES = 100_000        # `lab show --lines`
# The largest value of named whole-number settings (run settings and objective params): the
# seed, and counts that multiply the work or memory of a job beyond what any machine the lab
# targets can run. Other whole numbers must fit INT32.
MAX_BY_NAME = {"seed": SEED_MAX, "corpus_docs": 1_000_000, "n_docs": 1_000_000, "n_positions": 8192,
               "batch_size": 65_536, "grad_accum": 65_536,
               "n_samples": 64, "num_gpus": 64, "num_processes": 256,
               "group_size": 256, "n_passes": 64, "n_ahead": 1024, "n_ahead_talk": 1024,
               "max_thought_tokens": 8192, "max_new_tokens": 8192, "positions_per_doc": 8192,
               "top_k": 2**17}


def value_problems(values: dict[str, Any], defaults: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """What is wrong with each value whatever its setting means, by the type of its default:
    a whole number must fit a 32-bit store column (and MAX_BY_NAME), a number must be finite, a
    text, list or mapping setting must hold one. Returns {setting: message}."""
    out: dict[str, str] = {}
    for name, v in values.items():
        d = defaults.get(name)
        label = f"{prefix}{name}"
        if isinstance(d, bool) or d is None:
            if isinstance(v, (dict, list, tuple, set)):
                out[name] = f"{label} must be a single value, not {type(v).__name__} {short(v)}"
        elif isinstance(d, int):
            hi = MAX_BY_NAME.get(name, INT32_MAX)
            if isinstance(v, bool) or not isinstance(v, int):
                out[name] = f"{label} must be a whole number (got {short(v)})"
            elif not -INT32_MAX <= v <= hi:
                out[name] = f"{label} must be at most {hi:,} (got {v:,})" if v > 0 else \
                    f"{label} is out of range (got {v:,})"
        elif isinstance(d, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                out[name] = f"{label} must be a number (got {short(v)})"
            elif not math.isfinite(v):
                out[name] = f"{label} must be a finite number (got {v})"
        elif isinstance(d, str):
            if not isinstance(v, str):
                out[name] = f"{label} must be text (got {type(v).__name__} {short(v)})"
        elif isinstance(d, (list, tuple)):
            if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
                out[name] = f"{label} must be a list of names (got {short(v)})"
        elif isinstance(d, dict) and not isinstance(v, dict):
            out[name] = f"{label} must be a mapping of settings (got {short(v)})"
    return out


def dataclass_defaults(cls) -> dict[str, Any]:
    """Each field's default (factory defaults built), the type the checks go by."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def short(v: Any, width: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= width else text[:width - 1] + "…"


def int_in(lo: int, hi: int):
    """An argparse type: a whole number in [lo, hi], refused with a message otherwise."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number (got {text!r})") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo:,} and {hi:,} (got {v:,})")
        return v
    return parse
