"""The job spec: one dataclass shared by the CLI, YAML config files, the web form and the worker.

Objective-specific knobs live in `params`, validated by the objective's own `Params`
dataclass (see lab/objectives/). Every value a run used is stored with it in `runs.config`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lab.errors import LabError

DEVICES = ("auto", "cpu", "gpu")
PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class RunConfig:
    objective: str = "ntp"
    model: str = "smollm2-135m"
    corpus: str = "builtin"
    name: str = ""
    corpus_docs: int = 2000        # builtin: problems generated; files: max documents (0 = all)
    text_field: str = "text"       # JSONL / parquet column holding the text
    seq_len: int = 256
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int = 100
    max_flops: float = 0.0         # stop once cumulative training FLOPs reach this (0 = off)
    lr: float = 1e-5
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"           # auto | cpu | gpu
    num_gpus: int = 1              # processes when device is gpu (accelerate multi-GPU)
    mixed_precision: str = "no"    # no | bf16 | fp16 (GPU only)
    rho: float = 1.0               # forking-token mask: train on the top-rho entropy tokens
    log_every: int = 1
    sample_every: int = 10         # record per-token samples / thoughts every N steps
    n_samples: int = 2
    checkpoint_every: int = 50     # 0 = only at the end
    trust_remote_code: bool = False
    experiment: str = ""           # groups runs launched together (compare objectives)
    arm: str = ""                  # the experiment arm this run trains ("base": its pretraining)
    after: list[str] = field(default_factory=list)   # start once these runs have ended
    # Keep a checkpoint at the step count each of these runs ended with (read when this run
    # starts, so list them in `after` too): matched-steps references in an experiment.
    checkpoint_steps_of: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    # ---- (de)serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise LabError(f"Unknown setting(s): {', '.join(unknown)}. Known settings: "
                           f"{', '.join(sorted(known))}.")
        cfg = cls()
        for f in fields(cls):
            if f.name in d and d[f.name] is not None:
                setattr(cfg, f.name, _coerce(f.name, d[f.name], getattr(cfg, f.name)))
        return cfg

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(json.loads(text))

    # ---- validation ----------------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Check every value; raise one LabError listing all problems. Returns self with the
        objective's params completed with their defaults."""
        from lab.objectives import get_objective
        problems: list[str] = []

        def need(cond: bool, msg: str) -> None:
            if not cond:
                problems.append(msg)

        need(self.max_steps >= 1, f"max_steps must be at least 1 (got {self.max_steps})")
        need(self.max_flops >= 0, f"max_flops must be >= 0, 0 = no FLOP budget (got {self.max_flops})")
        need(self.lr > 0, f"lr (learning rate) must be positive (got {self.lr})")
        need(self.lr < 1, f"lr (learning rate) of {self.lr} is far too large; try 1e-5")
        need(self.batch_size >= 1, f"batch_size must be at least 1 (got {self.batch_size})")
        need(self.grad_accum >= 1, f"grad_accum must be at least 1 (got {self.grad_accum})")
        need(8 <= self.seq_len <= 8192, f"seq_len must be between 8 and 8192 (got {self.seq_len})")
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0 (got {self.warmup_steps})")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0 (got {self.weight_decay})")
        need(self.grad_clip >= 0, f"grad_clip must be >= 0, 0 = off (got {self.grad_clip})")
        need(0 < self.rho <= 1, f"rho (forking-token share) must be in (0, 1] (got {self.rho})")
        need(self.log_every >= 1, f"log_every must be at least 1 (got {self.log_every})")
        need(self.sample_every >= 1, f"sample_every must be at least 1 (got {self.sample_every})")
        need(self.n_samples >= 0, f"n_samples must be >= 0 (got {self.n_samples})")
        need(self.checkpoint_every >= 0, f"checkpoint_every must be >= 0 (got {self.checkpoint_every})")
        need(self.corpus_docs >= 0, f"corpus_docs must be >= 0 (got {self.corpus_docs})")
        need(self.device in DEVICES, f"device must be one of {DEVICES} (got {self.device!r})")
        need(self.mixed_precision in PRECISIONS,
             f"mixed_precision must be one of {PRECISIONS} (got {self.mixed_precision!r})")
        need(self.num_gpus >= 1, f"num_gpus must be at least 1 (got {self.num_gpus})")
        need(not (self.device == "cpu" and self.mixed_precision == "fp16"),
             "fp16 mixed precision needs a GPU; use 'no' or 'bf16' on CPU")
        need(bool(str(self.corpus).strip()), "corpus is empty: use 'builtin' or a file path")
        need(set(self.checkpoint_steps_of) <= set(self.after),
             "checkpoint_steps_of runs must also be listed in after (their step counts are read "
             "once they have ended)")
        if len(self.name) > 200:
            problems.append("name is longer than 200 characters")
        try:
            obj_cls = get_objective(self.objective)
        except LabError as e:
            problems.append(str(e))
        else:
            try:
                if isinstance(self.params, dict):   # "1e-4" from YAML/CLI/forms -> the field's type
                    defaults = {f.name: f.default for f in fields(obj_cls.Params)}
                    self.params = {k: _coerce(f"{self.objective} {k}", v, defaults[k])
                                   if k in defaults and defaults[k] is not dataclasses.MISSING
                                   and defaults[k] is not None else v for k, v in self.params.items()}
                params = obj_cls.Params(**self.params) if isinstance(self.params, dict) else None
                if params is None:
                    raise LabError("params must be a mapping of objective settings")
                problems.extend(params.problems(self) if hasattr(params, "problems") else [])
                self.params = dataclasses.asdict(params)
            except TypeError as e:
                known = [f.name for f in fields(obj_cls.Params)]
                problems.append(f"{self.objective} params: {e}. Known: {', '.join(known) or 'none'}")
            except LabError as e:
                problems.append(str(e))
        if problems:
            raise LabError("Invalid run settings:\n- " + "\n- ".join(problems))
        return self


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert strings from forms / YAML into the field's type, with a clear error."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise LabError(f"{name} must be true or false (got {value!r})")
    if isinstance(default, int) and not isinstance(default, bool):
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise LabError(f"{name} must be a whole number (got {value!r})") from None
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise LabError(f"{name} must be a number (got {value!r})") from None
    if isinstance(default, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise LabError(f"{name} must be a list (got {value!r})")
        return [str(v) for v in value]
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise LabError(f"{name} must be a mapping (got {value!r})")
        return dict(value)
    return str(value)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) config file into a dict of RunConfig fields."""
    import yaml
    p = Path(path)
    if not p.exists():
        raise LabError(f"Config file {p} does not exist.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise LabError(f"Config file {p} is not valid YAML: {str(e).splitlines()[0]}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LabError(f"Config file {p} must hold a mapping of settings (key: value).")
    return data


# Launch presets shown in the web form and usable from the CLI with --preset. A preset may
# set the objective and its params; sizes are chosen for 2 CPU cores unless marked GPU.
PRESETS: dict[str, dict[str, Any]] = {
    "quick CPU demo (tiny-random, 30 steps)": dict(
        model="tiny-random", corpus="builtin", seq_len=128, batch_size=4, max_steps=30,
        lr=1e-3, warmup_steps=5, sample_every=10, checkpoint_every=0, corpus_docs=400),
    "SmolLM2-135M short CPU run (60 steps)": dict(
        model="smollm2-135m", corpus="builtin", seq_len=128, batch_size=4, max_steps=60,
        lr=1e-5, warmup_steps=10, sample_every=10, checkpoint_every=30, corpus_docs=2000),
    "Quiet-STaR on SmolLM2-135M, CPU demo (~30 s/step)": dict(
        objective="quiet-star", model="smollm2-135m", corpus="builtin", seq_len=64, batch_size=1,
        max_steps=20, lr=1e-5, warmup_steps=5, sample_every=2, n_samples=1, checkpoint_every=10,
        params=dict(n_ahead=8, n_ahead_talk=4, n_passes=2)),
    "RLP on SmolLM2-135M, CPU demo": dict(
        objective="rlp", model="smollm2-135m", corpus="builtin", seq_len=128, batch_size=2,
        max_steps=20, lr=1e-6, warmup_steps=0, sample_every=2, n_samples=2, checkpoint_every=10,
        params=dict(group_size=4, max_thought_tokens=32)),
    "RPT on SmolLM2-135M, CPU demo (10 warm-up steps)": dict(
        objective="rpt", model="smollm2-135m", corpus="builtin", seq_len=128, batch_size=2,
        max_steps=30, lr=1e-6, warmup_steps=0, sample_every=2, n_samples=2, checkpoint_every=10,
        # G = 8 (the paper's): with G = 4 a 135M model rarely gets one guess of a group right,
        # so every group is dropped; docs/benchmarks.md has the measured signal.
        params=dict(group_size=8, max_new_tokens=64, warmup_steps_format=10, warmup_lr=1e-4)),
    "Quiet-STaR paper settings (GPU: lr 1e-6, batch 8 x 256, 100 steps)": dict(
        objective="quiet-star", model="smollm2-135m", corpus="builtin", seq_len=256, batch_size=8,
        max_steps=100, lr=1e-6, warmup_steps=20, grad_clip=1.0, sample_every=10,
        checkpoint_every=50, device="gpu", mixed_precision="bf16"),
}
