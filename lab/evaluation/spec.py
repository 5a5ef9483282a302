"""EvalSpec: one evaluation, as the CLI, the job system and the web form describe it."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any

from lab import limits
from lab.errors import LabError
from lab.evaluation.benchmarks import BENCHMARKS, HELDOUT_BENCHMARKS

THOUGHT_MODES = ("none", "thoughts", "corrupted")
DEVICES = ("auto", "cpu", "gpu")
EVAL_PRECISIONS = ("no", "bf16", "auto")
MAX_NEW_TOKENS_LIMIT = 4096


@dataclass
class EvalSpec:
    model: str = "smollm2-135m"      # model spec (preset, folder, hub id, run:<id>[@step])
    benchmark: str = "gsm8k"         # one of BENCHMARKS
    data: str | None = None          # file path or hf:NAME; None = built-in generator
    limit: int = 0                   # first N items (0 = all; built-in: 200)
    batch_size: int = 8              # questions per forward / generate call
    max_new_tokens: int = 0          # 0 = the benchmark's default
    seed: int = 0                    # thought sampling / corruption, bootstrap
    thought_mode: str = "none"       # none | thoughts | corrupted (Quiet-STaR checkpoints)
    run_id: str | None = None        # the training run this evaluates (default: from run:<id>)
    device: str = "auto"             # auto (GPU when there is one) | cpu | gpu
    reference: str = ""              # heldout-nll: model whose entropy picks forking tokens
                                     # ("" = the evaluated model itself)
    # fp32 by default: evaluation is the measuring instrument, checked item by item against
    # lm-evaluation-harness, and scores of different precisions must not be compared. "bf16"
    # (or "auto": bf16 where native) runs it under bf16 autocast: 2.5x CSQA items/s on the
    # AMX CPU (docs/benchmarks.md); compare such evals only with evals of the same precision.
    precision: str = "no"            # no (fp32) | bf16 | auto
    extra: dict[str, Any] = field(default_factory=dict)   # free-form notes stored in config

    def __post_init__(self) -> None:
        if isinstance(self.data, os.PathLike):
            self.data = str(self.data)
        if isinstance(self.data, str) and not self.data.strip():
            self.data = None
        self.model = self.model.strip() if isinstance(self.model, str) else self.model

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise LabError(f"Unknown eval setting(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")
        return cls(**{k: v for k, v in d.items() if v is not None or k in ("data", "run_id")})

    @property
    def bench(self):
        return BENCHMARKS[self.benchmark]

    def new_tokens(self) -> int:
        return self.max_new_tokens or self.bench.max_new_tokens

    # ---- validation ------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Everything wrong with this spec (empty when it can run). Cheap: no model load;
        a data file is opened and its first records checked."""
        out: list[str] = []
        if self.benchmark not in BENCHMARKS:
            out.append(f"unknown benchmark {self.benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
        if not str(self.model or "").strip():
            out.append("model is empty: give a preset (smollm2-135m, tiny-random), a folder or a run id")
        ranges = {"limit": (0, limits.INT32_MAX, f"limit must be between 0 (all items) and {limits.INT32_MAX:,}"),
                  "batch_size": (1, 1024, "batch_size must be between 1 and 1024"),
                  "max_new_tokens": (0, MAX_NEW_TOKENS_LIMIT,
                                     f"max_new_tokens must be between 0 (benchmark default) and {MAX_NEW_TOKENS_LIMIT}"),
                  "seed": (0, limits.SEED_MAX, f"seed must be between 0 and {limits.SEED_MAX:,}")}
        for name, (lo, hi, msg) in ranges.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                out.append(f"{name} must be a whole number (got {limits.short(v)})")
            elif not lo <= v <= hi:
                out.append(f"{msg} (got {v:,})")
        # The other settings: what any value of their type must be (lab/limits.py).
        out.extend(limits.value_problems({k: v for k, v in vars(self).items() if k not in ranges and k != "data"},
                                         limits.dataclass_defaults(EvalSpec)).values())
        if self.thought_mode not in THOUGHT_MODES:
            out.append(f"thought_mode must be one of {', '.join(THOUGHT_MODES)} (got {self.thought_mode!r})")
        if self.device not in DEVICES:
            out.append(f"device must be one of {', '.join(DEVICES)} (got {self.device!r})")
        if self.precision not in EVAL_PRECISIONS:
            out.append(f"precision must be one of {', '.join(EVAL_PRECISIONS)} (got {self.precision!r})")
        if self.benchmark in BENCHMARKS:
            if self.reference and not BENCHMARKS[self.benchmark].scoring.uses_reference:
                out.append("reference (the entropy model) is used by heldout-nll only")
            if self.data is not None and not isinstance(self.data, str):
                out.append(f"data must be a path or hf:NAME (got {self.data!r})")
            else:
                from lab.evaluation.benchmarks import check_data
                out.extend(check_data(self.benchmark, self.data))
        return out

    def validate(self) -> "EvalSpec":
        probs = self.problems()
        if probs:
            raise LabError("Cannot run this evaluation:\n- " + "\n- ".join(probs))
        return self
