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

from lab import limits
from lab.errors import LabError, regular_file
from lab.precision import PRECISIONS

DEVICES = ("auto", "cpu", "gpu")
EXECUTORS = ("local", "slurm")
# accelerate 1.15 turns its FSDP plugin on only for multi-GPU processes: on CPU (gloo) the same
# launch silently trains with plain data parallelism (tried here: full-size weights per rank).
FSDP_NEEDS_GPUS = ("fsdp needs GPUs: accelerate applies its FSDP plugin to multi-GPU processes "
                   "only (on CPU it would silently run plain data parallelism)")


def setting(default: Any, help: str, *, advanced: bool = False) -> Any:
    """A documented setting: its help text is the one source for `--help`, the Launch form's
    tooltips and the README's settings table (`settings_table`). `advanced` settings sit
    behind the form's "Advanced" fold. Objective Params document their fields the same way."""
    meta = {"help": help, "advanced": advanced}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    objective: str = setting("ntp", "Training objective: ntp (next-token baseline), quiet-star, rlp or rpt.")
    model: str = setting("smollm2-135m", "Model to start from: a preset (smollm2-135m, tiny-random), a "
                         "folder, a Hugging Face id, or run:<id>[@step] to continue from a run's checkpoint.")
    corpus: str = setting("builtin", "Training text: builtin (generated math problems), a .txt/.jsonl/"
                          ".parquet file, or hf:<dataset>.")
    name: str = setting("", "Optional run name shown in pickers and reports.")
    corpus_docs: int = setting(2000, "builtin: problems generated; files: maximum documents read (0 = all).")
    text_field: str = setting("text", "JSONL / parquet column holding the text.", advanced=True)
    seq_len: int = setting(256, "Tokens per training sequence (documents are packed).")
    batch_size: int = setting(8, "Sequences per micro-batch.")
    grad_accum: int = setting(1, "Micro-batches per optimizer step (effective batch = batch_size x grad_accum).",
                              advanced=True)
    max_steps: int = setting(100, "Optimizer steps to train for.")
    max_flops: float = setting(0.0, "Stop once cumulative training FLOPs reach this (0 = no FLOP budget); "
                               "experiments use it to compare objectives at matched compute.", advanced=True)
    lr: float = setting(1e-5, "Learning rate (AdamW; linear warm-up, then constant as in the Quiet-STaR and RLP recipes).")
    warmup_steps: int = setting(10, "Steps of linear learning-rate warm-up.")
    weight_decay: float = setting(0.0, "AdamW weight decay.", advanced=True)
    grad_clip: float = setting(1.0, "Clip the gradient norm to this (0 = off).", advanced=True)
    seed: int = setting(0, "Random seed (data order, sampling, initialisation of new parts).")
    device: str = setting("auto", "auto (a GPU when there is one), cpu or gpu.")
    num_gpus: int = setting(1, "Processes when device is gpu (accelerate multi-GPU).", advanced=True)
    num_processes: int = setting(1, "Data-parallel processes (ranks). On CPU: that many processes (gloo), each its "
                                 "own share of the cores; on GPU: one process per GPU, max(num_gpus, num_processes) GPUs.",
                                 advanced=True)
    fsdp: bool = setting(False, "Shard weights, gradients and optimizer state over the ranks (accelerate FSDP; "
                         "needs GPUs).", advanced=True)
    executor: str = setting("local", "local = this machine's queue; slurm = submit with sbatch (jobs/slurm.py).",
                            advanced=True)
    mixed_precision: str = setting("auto", "auto (bf16 autocast where the hardware runs it natively: GPUs, "
                                   "AMX/AVX512-bf16 CPUs; fp32 elsewhere), no (fp32), bf16 or fp16 (GPU only). "
                                   "Weights and optimizer stay fp32.", advanced=True)
    rho: float = setting(1.0, "Forking-token share: train only on the top-rho highest-entropy tokens of "
                         "each micro-batch (1 = all tokens).")
    log_every: int = setting(1, "Print a progress line (step, loss, step time) to the job's log every N steps.",
                             advanced=True)
    sample_every: int = setting(10, "Record per-token samples and thoughts every N steps (pages show these).")
    n_samples: int = setting(2, "Probe sequences recorded each time.", advanced=True)
    checkpoint_every: int = setting(50, "Save a checkpoint every N steps (0 = only at the end).")
    trust_remote_code: bool = setting(False, "Run a model's own Python code; only for models you trust.",
                                      advanced=True)
    experiment: str = setting("", "Experiment id grouping runs launched together (set by experiments).",
                              advanced=True)
    arm: str = setting("", "Experiment arm this run trains (\"base\": its pretraining; set by experiments).",
                       advanced=True)
    after: list[str] = setting([], "Comma-separated run ids: start once these runs have ended.", advanced=True)
    checkpoint_steps_of: list[str] = setting(
        [], "Comma-separated run ids: keep a checkpoint at the step count each ended with (list them in "
        "after too); matched-steps references in an experiment.", advanced=True)
    report_to: list[str] = setting([], "Also send the metrics to these trackers (comma-separated): tensorboard, "
                                   "wandb, mlflow. Off by default; DuckDB always gets them.", advanced=True)
    params: dict[str, Any] = setting({}, "Objective settings (see the objective's Params).")

    # ---- (de)serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        if not isinstance(d, dict):
            raise LabError(f"Run settings must be a mapping of setting names to values (got {limits.short(d)}).")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(d) - known)
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
        # What any value of its type must satisfy (lab/limits.py), then what each setting means.
        bad = limits.value_problems(vars(self), limits.dataclass_defaults(RunConfig))
        problems: list[str] = list(bad.values())

        def need(setting: str, cond: bool, msg: str) -> None:
            if not cond and setting not in bad:
                problems.append(msg)

        try:
            need("max_steps", self.max_steps >= 1, f"max_steps must be at least 1 (got {self.max_steps})")
            need("max_flops", self.max_flops >= 0, f"max_flops must be >= 0, 0 = no FLOP budget (got {self.max_flops})")
            need("lr", self.lr > 0, f"lr (learning rate) must be positive (got {self.lr})")
            need("lr", self.lr < 1, f"lr (learning rate) of {self.lr} is far too large; try 1e-5")
            need("batch_size", self.batch_size >= 1, f"batch_size must be at least 1 (got {self.batch_size})")
            need("grad_accum", self.grad_accum >= 1, f"grad_accum must be at least 1 (got {self.grad_accum})")
            need("seq_len", 8 <= self.seq_len <= limits.MAX_SEQ_LEN,
                 f"seq_len must be between 8 and {limits.MAX_SEQ_LEN} (got {self.seq_len})")
            need("batch_size", "seq_len" in bad or self.batch_size * self.seq_len <= limits.MAX_BATCH_TOKENS,
                 f"batch_size x seq_len = {self.batch_size * self.seq_len:,} tokens in one micro-batch is "
                 f"more than a step can hold (limit {limits.MAX_BATCH_TOKENS:,}); use a smaller batch_size "
                 "and grad_accum for a larger effective batch")
            need("seed", 0 <= self.seed <= limits.SEED_MAX,
                 f"seed must be between 0 and {limits.SEED_MAX:,} (got {self.seed:,})")
            need("warmup_steps", self.warmup_steps >= 0, f"warmup_steps must be >= 0 (got {self.warmup_steps})")
            need("weight_decay", self.weight_decay >= 0, f"weight_decay must be >= 0 (got {self.weight_decay})")
            need("grad_clip", self.grad_clip >= 0, f"grad_clip must be >= 0, 0 = off (got {self.grad_clip})")
            need("rho", 0 < self.rho <= 1, f"rho (forking-token share) must be in (0, 1] (got {self.rho})")
            need("log_every", self.log_every >= 1, f"log_every must be at least 1 (got {self.log_every})")
            need("sample_every", self.sample_every >= 1, f"sample_every must be at least 1 (got {self.sample_every})")
            need("n_samples", self.n_samples >= 0, f"n_samples must be >= 0 (got {self.n_samples})")
            need("checkpoint_every", self.checkpoint_every >= 0,
                 f"checkpoint_every must be >= 0 (got {self.checkpoint_every})")
            need("corpus_docs", self.corpus_docs >= 0, f"corpus_docs must be >= 0 (got {self.corpus_docs})")
            need("device", self.device in DEVICES, f"device must be one of {DEVICES} (got {self.device!r})")
            need("mixed_precision", self.mixed_precision in PRECISIONS,
                 f"mixed_precision must be one of {PRECISIONS} (got {self.mixed_precision!r})")
            need("num_gpus", self.num_gpus >= 1, f"num_gpus must be at least 1 (got {self.num_gpus})")
            need("num_processes", self.num_processes >= 1,
                 f"num_processes must be at least 1 (got {self.num_processes})")
            need("fsdp", not self.fsdp or self.device != "cpu", FSDP_NEEDS_GPUS)
            need("executor", self.executor in EXECUTORS,
                 f"executor must be one of {EXECUTORS} (got {self.executor!r})")
            need("fsdp", not self.fsdp or max(self.num_gpus, self.num_processes) >= 2,
                 "fsdp shards the model over processes: set num_gpus (or num_processes) to 2 or more")
            need("fsdp", not self.fsdp or self.objective == "ntp",
                 "fsdp runs the ntp objective only: the reasoning objectives keep full copies of the "
                 "model (RLP's EMA teacher, RPT's proxy) updated from the weights FSDP shards")
            need("mixed_precision", not (self.device == "cpu" and self.mixed_precision == "fp16"),
                 "fp16 mixed precision needs a GPU; use 'no' or 'bf16' on CPU")
            need("corpus", bool(str(self.corpus).strip()), "corpus is empty: use 'builtin' or a file path")
            need("checkpoint_steps_of", "after" in bad or set(self.checkpoint_steps_of) <= set(self.after),
                 "checkpoint_steps_of runs must also be listed in after (their step counts are read "
                 "once they have ended)")
            need("name", len(self.name) <= 200, "name is longer than 200 characters")
            if "report_to" not in bad:
                from lab import trackers
                problems.extend(trackers.problems(self.report_to))
        except TypeError:
            pass   # a value of the wrong type: already in `bad`
        if "objective" not in bad and "params" not in bad:
            problems.extend(self._params_problems(get_objective))
        if problems:
            raise LabError("Invalid run settings:\n- " + "\n- ".join(problems))
        return self

    def _params_problems(self, get_objective) -> list[str]:
        """The objective's own settings: coerced to their fields' types, checked like run
        settings (lab/limits.py), then by the objective's Params.problems."""
        try:
            obj_cls = get_objective(self.objective)
        except LabError as e:
            return [str(e)]
        defaults = limits.dataclass_defaults(obj_cls.Params)
        known = ", ".join(defaults) or "none"
        unknown = [str(k) for k in self.params if k not in defaults]
        if unknown:
            return [f"{self.objective} params: unknown setting(s) {', '.join(unknown)}. Known: {known}"]
        try:   # "1e-4" from YAML/CLI/forms -> the field's type
            self.params = {k: _coerce(f"{self.objective} {k}", v, defaults[k]) if defaults[k] is not None else v
                           for k, v in self.params.items()}
        except LabError as e:
            return [str(e)]
        bad = limits.value_problems(self.params, defaults, prefix=f"{self.objective} ")
        if bad:
            return list(bad.values())
        try:
            params = obj_cls.Params(**self.params)
        except TypeError as e:
            return [f"{self.objective} params: {e}. Known: {known}"]
        self.params = dataclasses.asdict(params)
        return params.problems(self) if hasattr(params, "problems") else []


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert strings from forms / YAML into the field's type, with a clear error."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, (str, int)) and str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise LabError(f"{name} must be true or false (got {limits.short(value)})")
    if isinstance(default, int):
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        except (TypeError, ValueError, OverflowError):
            raise LabError(f"{name} must be a whole number (got {limits.short(value)})") from None
    if isinstance(default, float):
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError, OverflowError):
            raise LabError(f"{name} must be a number (got {limits.short(value)})") from None
    if isinstance(default, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int)) for v in value):
            raise LabError(f"{name} must be a list of names (got {limits.short(value)})")
        return [str(v) for v in value]
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise LabError(f"{name} must be a mapping (got {limits.short(value)})")
        return dict(value)
    if isinstance(value, (dict, list, tuple, set)) or value is None:
        raise LabError(f"{name} must be text (got {limits.short(value)})")
    return str(value)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) config file into a dict of RunConfig fields."""
    import yaml
    p = regular_file(path, "Config file")
    if p.stat().st_size > 1_000_000:
        raise LabError(f"Config file {p} is larger than 1 MB; a config holds a few settings.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise LabError(f"Config file {p} is not valid YAML: {str(e).splitlines()[0]}") from e
    except OSError as e:
        raise LabError(f"Config file {p} cannot be read ({e.strerror or e}).") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LabError(f"Config file {p} must hold a mapping of settings (key: value).")
    for where, mapping in (("", data), ("params: ", data.get("params"))):
        if isinstance(mapping, dict) and not all(isinstance(k, str) for k in mapping):
            raise LabError(f"Config file {p}: {where}setting names must be text (got "
                           f"{limits.short([k for k in mapping if not isinstance(k, str)])}).")
    if data.get("params") is not None and not isinstance(data["params"], dict):
        raise LabError(f"Config file {p}: params must be a mapping of objective settings "
                       f"(e.g. params: {{n_ahead: 8}}), got {limits.short(data['params'])}.")
    return data


# Launch presets: short ids to type after --preset, long titles (PRESET_TITLES) shown in the
# web form. A preset may set the objective and its params; sizes are chosen for 2 CPU cores
# unless marked GPU. Times in titles were measured on the project's 2-core machine while it
# was busy with other jobs; elsewhere they depend on the hardware.
PRESETS: dict[str, dict[str, Any]] = {
    "quick-cpu": dict(
        model="tiny-random", corpus="builtin", seq_len=128, batch_size=4, max_steps=30,
        lr=1e-3, warmup_steps=5, sample_every=10, checkpoint_every=0, corpus_docs=400),
    "smollm2-cpu": dict(
        model="smollm2-135m", corpus="builtin", seq_len=128, batch_size=4, max_steps=60,
        lr=1e-5, warmup_steps=10, sample_every=10, checkpoint_every=30, corpus_docs=2000),
    "quiet-star-cpu": dict(
        objective="quiet-star", model="smollm2-135m", corpus="builtin", seq_len=64, batch_size=1,
        max_steps=20, lr=1e-5, warmup_steps=5, sample_every=2, n_samples=1, checkpoint_every=10,
        params=dict(n_ahead=8, n_ahead_talk=4, n_passes=2)),
    "rlp-cpu": dict(
        objective="rlp", model="smollm2-135m", corpus="builtin", seq_len=128, batch_size=2,
        max_steps=20, lr=1e-6, warmup_steps=0, sample_every=2, n_samples=2, checkpoint_every=10,
        params=dict(group_size=4, max_thought_tokens=32)),
    "rpt-cpu": dict(
        objective="rpt", model="smollm2-135m", corpus="builtin", seq_len=128, batch_size=2,
        max_steps=30, lr=1e-6, warmup_steps=0, sample_every=2, n_samples=2, checkpoint_every=10,
        # G = 8 (the paper's): with G = 4 a 135M model rarely gets one guess of a group right,
        # so every group is dropped; docs/benchmarks.md has the measured signal.
        params=dict(group_size=8, max_new_tokens=64, warmup_steps_format=10, warmup_lr=1e-4)),
    "quiet-star-paper-gpu": dict(
        objective="quiet-star", model="smollm2-135m", corpus="builtin", seq_len=256, batch_size=8,
        max_steps=100, lr=1e-6, warmup_steps=20, grad_clip=1.0, sample_every=10,
        checkpoint_every=50, device="gpu", mixed_precision="bf16"),
}
PRESET_TITLES: dict[str, str] = {
    "quick-cpu": "quick CPU demo (tiny-random, 30 steps)",
    "smollm2-cpu": "SmolLM2-135M short CPU run (60 steps)",
    "quiet-star-cpu": "Quiet-STaR on SmolLM2-135M, CPU demo (slow: 5-6 min/step on 2 busy cores)",
    "rlp-cpu": "RLP on SmolLM2-135M, CPU demo (time per step depends on hardware)",
    "rpt-cpu": "RPT on SmolLM2-135M, CPU demo (10 warm-up steps; time depends on hardware)",
    "quiet-star-paper-gpu": "Quiet-STaR paper settings (GPU: lr 1e-6, batch 8 x 256, 100 steps)",
}


def preset_title(preset_id: str) -> str:
    return PRESET_TITLES.get(preset_id, preset_id)


def settings_help(cls: type) -> dict[str, dict[str, Any]]:
    """Field name -> {"help", "advanced", "default"} of a documented settings dataclass
    (RunConfig or an objective's Params); fields without help text get an empty one."""
    out = {}
    for f in fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out[f.name] = {"help": f.metadata.get("help", ""), "advanced": bool(f.metadata.get("advanced")),
                       "default": default}
    return out


def settings_table() -> str:
    """The README's settings table (Markdown), generated from the field metadata:
    `python -m lab settings` prints it."""
    from lab.objectives import REGISTRY, get_objective
    lines = ["| setting | default | what it does |", "|---|---|---|"]
    for name, h in settings_help(RunConfig).items():
        lines.append(f"| `{name}` | `{h['default']!r}` | {h['help']}{' (advanced)' if h['advanced'] else ''} |")
    for obj in REGISTRY:
        for name, h in settings_help(get_objective(obj).Params).items():
            lines.append(f"| `{obj}` `{name}` | `{h['default']!r}` | {h['help'] or '–'} |")
    return "\n".join(lines) + "\n"
