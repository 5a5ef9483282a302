"""The experiment spec: one YAML file says everything an experiment does (docs/evaluation.md,
"Experiment specs"). It is checked structurally before any job exists, stored beside the
experiment (`<data>/experiments/<id>.yaml`) and read back by `status`, `report` and the page.

    spec = load_spec("my-experiment.yaml")          # or ExperimentSpec.from_dict({...})
    spec.validate()                                 # LabError listing every problem
    print(spec.to_yaml())

An experiment optionally pretrains the base model with NTP (one shared run, the "pretrained
base"), then trains every arm with every seed from that checkpoint at a matched budget, and
evaluates each checkpoint, the base and the controls on the same items.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lab import limits
from lab.errors import LabError

BUDGET_MODES = ("flops", "steps")
DEFAULT_BENCHMARKS = ["math-test", "math-longer", "math-format", "heldout-nll"]
DEFAULT_LIMIT = 1000            # items per benchmark: a 95 % CI on accuracy of about +-3 points
DEFAULT_SEEDS = 3
PRETRAIN_SEED = 1000            # distinct from the arms' seeds: on the built-in generator the
                                # branch phase then reads other problems than the pretraining
TITLES = {"ntp": "NTP", "quiet-star": "Quiet-STaR", "rlp": "RLP", "rpt": "RPT"}
# RunConfig fields the experiment sets itself; `training` sections may not.
RESERVED = ("objective", "model", "corpus", "name", "max_steps", "max_flops", "seed", "experiment",
            "after", "checkpoint_steps_of", "params", "arm")
ARM_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
PRESET_DIR = Path(__file__).resolve().parent / "presets"
STEP_HEADROOM = 100             # flops mode: max_steps = budget_steps x this (the FLOPs end a run)


@dataclass
class Arm:
    """One training recipe compared in the experiment; it runs once per seed."""
    id: str                                   # short id: lowercase letters, digits, - and _
    objective: str                            # a registered objective (lab.objectives)
    title: str = ""                           # display name (default: the objective's)
    params: dict[str, Any] = field(default_factory=dict)      # the objective's settings
    training: dict[str, Any] = field(default_factory=dict)    # RunConfig overrides (e.g. rho)
    # Evaluation thought modes besides "none" (Quiet-STaR checkpoints only); None = the
    # default: ["thoughts", "corrupted"] for Quiet-STaR when controls.thought_modes is on.
    thought_modes: list[str] | None = None

    @property
    def display(self) -> str:
        return self.title or TITLES.get(self.objective, self.id)

    # The research note's arms (issue 12) are objective settings; these name them.
    @property
    def at_forking(self) -> bool:
        """Thinks only at forking tokens: Quiet-STaR thought_positions=forking, or RLP
        position_sampling=forking."""
        key = {"quiet-star": "thought_positions", "rlp": "position_sampling"}.get(self.objective)
        return key is not None and self.params.get(key) == "forking"

    @property
    def random_thoughts(self) -> bool:
        """Quiet-STaR trained (and evaluated) with random thoughts: the scaffolding control."""
        return self.objective == "quiet-star" and self.params.get("thought_content") == "random"


# Ready-made arms for the research note's claims (issue 12), offered by the experiment form
# and usable in any spec: thoughts at every token vs only at forking tokens, random thoughts
# trained as scaffolding, and RLP at high-entropy positions.
ARM_CHOICES = [
    Arm("quiet-star-every", "quiet-star", "Quiet-STaR (every token)", {"thought_positions": "all"}),
    Arm("quiet-star-forking", "quiet-star", "Quiet-STaR (forking tokens)",
        {"thought_positions": "forking", "thought_share": 0.2}),
    Arm("quiet-star-random", "quiet-star", "Quiet-STaR (random thoughts, trained)",
        {"thought_content": "random"}),
    Arm("rlp-forking", "rlp", "RLP (forking positions)",
        {"position_sampling": "forking", "position_share": 0.2}),
]


@dataclass
class Pretrain:
    """NTP pretraining of the base before the arms branch off (steps 0 = none)."""
    steps: int = 0                            # NTP optimizer steps
    seed: int = PRETRAIN_SEED
    training: dict[str, Any] = field(default_factory=dict)    # RunConfig overrides for it


@dataclass
class Branch:
    """The budget every arm gets after the (optional) pretraining."""
    budget_mode: str = "flops"                # flops: the FLOPs of budget_steps NTP steps; steps
    budget_steps: int = 20


@dataclass
class Evaluation:
    benchmarks: list[str] = field(default_factory=lambda: list(DEFAULT_BENCHMARKS))
    limit: int = DEFAULT_LIMIT                # items per benchmark (0 = all of a data file)
    limits: dict[str, int] = field(default_factory=dict)      # per-benchmark overrides
    max_new_tokens: int = 0                   # 0 = each benchmark's default
    batch_size: int = 16
    data: dict[str, str] = field(default_factory=dict)        # {"gsm8k": path, "csqa": path}
    precision: str = "no"                     # every eval of the experiment: no (fp32) | bf16 | auto


@dataclass
class Controls:
    thought_modes: bool = True                # Quiet-STaR arms also with real / corrupted thoughts
    cot: bool = True                          # base model with and without CoT (needs GSM8K data)
    matched_steps: bool = True                # flops mode: the reference at each arm's step count


@dataclass
class ExperimentSpec:
    model: str                                # preset, folder, hub id or run:ID
    arms: list[Arm]
    title: str = ""                           # long title shown on the page and in reports
    corpus: str = "builtin"
    training: dict[str, Any] = field(default_factory=dict)    # RunConfig fields shared by all runs
    pretrain: Pretrain = field(default_factory=Pretrain)
    branch: Branch = field(default_factory=Branch)
    reference: str = ""                       # the arm others are compared with (default: NTP)
    seeds: list[int] = field(default_factory=lambda: list(range(DEFAULT_SEEDS)))
    evaluation: Evaluation = field(default_factory=Evaluation)
    controls: Controls = field(default_factory=Controls)

    # ---- reading and writing ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "spec") -> "ExperimentSpec":
        """Build from a mapping (YAML); raises LabError naming every key that is unknown or of
        the wrong type. `seeds: 3` means seeds [0, 1, 2]."""
        problems: list[str] = []
        if isinstance(data, dict) and isinstance(data.get("seeds"), int) and not isinstance(data["seeds"], bool):
            data = {**data, "seeds": list(range(max(data["seeds"], 0)))}      # 0 -> [] -> "empty"
        spec = _build(cls, data, "", problems)
        if problems:
            raise LabError(f"Invalid experiment spec ({source}):\n- " + "\n- ".join(problems))
        return spec

    def to_dict(self) -> dict[str, Any]:
        """Every setting, defaults included, in reading order (title first)."""
        d = dataclasses.asdict(self)
        # An arm's unset optional keys are left out: the YAML stays readable, and reads back the same.
        d["arms"] = [{k: v for k, v in a.items() if k in ("id", "objective") or v not in ("", {}, None)}
                     for a in d["arms"]]
        order = ["title", "model", "corpus", "training", "pretrain", "branch", "arms", "reference",
                 "seeds", "evaluation", "controls"]
        return {k: d[k] for k in order + [k for k in d if k not in order]}

    def to_yaml(self) -> str:
        import yaml
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100)

    # ---- derived ---------------------------------------------------------------------------
    def arm(self, arm_id: str) -> Arm:
        return next(a for a in self.arms if a.id == arm_id)

    @property
    def reference_arm(self) -> str:
        """The arm every other arm is compared with: `reference`, else the first NTP arm, else
        the first arm."""
        if self.reference:
            return self.reference
        return next((a.id for a in self.arms if a.objective == "ntp"), self.arms[0].id if self.arms else "")

    def thought_modes_of(self, arm: Arm) -> list[str]:
        """Evaluation thought modes besides "none". A random-thought arm is evaluated with
        random thoughts only (mode "corrupted"), as it was trained."""
        if arm.thought_modes is not None:
            return list(arm.thought_modes)
        if arm.objective != "quiet-star" or not self.controls.thought_modes:
            return []
        return ["corrupted"] if arm.random_thoughts else ["thoughts", "corrupted"]

    def limit_of(self, benchmark: str) -> int:
        return int(self.evaluation.limits.get(benchmark, self.evaluation.limit))

    def titles(self) -> dict[str, str]:
        """Arm id -> display title, plus the base model's."""
        base = "pretrained base" if self.pretrain.steps else "base model"
        return {"base": base, **{a.id: a.display for a in self.arms}}

    # ---- checks ----------------------------------------------------------------------------
    def problems(self, data_dir: str | Path | None = None) -> list[str]:
        """Everything wrong with the spec that can be told quickly (no model weights, no
        corpus read): settings, arms and their objective settings, benchmarks and their data
        files. The model is checked here when that is cheap (a preset, a run, a folder);
        a hub id is checked by the experiment's first job."""
        from lab.evaluation import BENCHMARKS, THOUGHT_MODES
        from lab.evaluation.benchmarks import check_data
        from lab.evaluation.spec import MAX_NEW_TOKENS_LIMIT
        out: list[str] = []
        out += _model_problems(self.model, data_dir)
        if not str(self.corpus).strip():
            out.append("corpus is empty: use 'builtin', a .txt/.jsonl/.parquet file or hf:NAME")
        elif not _builtin_or_hf(self.corpus) and not Path(self.corpus).expanduser().exists():
            out.append(f"corpus {self.corpus!r} is neither 'builtin', an hf:NAME dataset nor an existing file")
        for where, section in (("training", self.training), ("pretrain.training", self.pretrain.training)):
            out += _training_problems(where, section)
        shared = _config_problems(self.training, "ntp", {}, self.model)
        out += [f"training: {p}" for p in shared]
        out += [f"pretrain.training: {p}" for p in
                _config_problems({**self.training, **self.pretrain.training}, "ntp", {}, self.model)
                if p not in shared]
        if self.pretrain.steps < 0:
            out.append(f"pretrain.steps must be >= 0, 0 = no pretraining (got {self.pretrain.steps})")
        if self.branch.budget_mode not in BUDGET_MODES:
            out.append(f"branch.budget_mode must be one of {', '.join(BUDGET_MODES)} (got {self.branch.budget_mode!r})")
        if self.branch.budget_steps < 1:
            out.append(f"branch.budget_steps must be at least 1 (got {self.branch.budget_steps})")
        if not self.arms:
            out.append("arms is empty: list at least one arm (id, objective)")
        ids = [a.id for a in self.arms]
        out += [f"arm id {i!r} is used twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
        for n, arm in enumerate(self.arms):
            where = f"arms[{n}] ({arm.id})"
            if not ARM_ID.match(arm.id) or arm.id == "base":
                out.append(f"{where}: id must be 1-40 lowercase letters, digits, '-' or '_' and not 'base'")
            out += _training_problems(f"{where}.training", arm.training)
            out += [f"{where}: {p}" for p in _config_problems({**self.training, **arm.training},
                                                              arm.objective, arm.params, self.model)
                    if p not in shared]
            for m in self.thought_modes_of(arm):
                if m not in THOUGHT_MODES or m == "none":
                    out.append(f"{where}.thought_modes: {m!r} is not one of thoughts, corrupted")
                elif arm.objective != "quiet-star":
                    out.append(f"{where}.thought_modes: thought modes need a Quiet-STaR arm "
                               f"(this arm trains {arm.objective})")
                elif m == "thoughts" and arm.random_thoughts:
                    out.append(f"{where}.thought_modes: a random-thought arm has no thoughts of its "
                               "own; it is evaluated with random thoughts (corrupted)")
        if self.reference and self.reference not in ids:
            out.append(f"reference {self.reference!r} is not an arm id ({', '.join(ids) or 'none'})")
        if not self.seeds:
            out.append("seeds is empty: give a count (3) or a list of seeds ([0, 1, 2])")
        if len(set(self.seeds)) != len(self.seeds) or any(not 0 <= s <= limits.SEED_MAX for s in self.seeds):
            out.append(f"seeds must be distinct numbers from 0 to {limits.SEED_MAX} (got {limits.short(self.seeds)})")
        if not 0 <= self.pretrain.seed <= limits.SEED_MAX:
            out.append(f"pretrain.seed must be from 0 to {limits.SEED_MAX} (got {self.pretrain.seed})")
        for name, v, most in (("pretrain.steps", self.pretrain.steps, limits.INT32_MAX),
                              ("branch.budget_steps", self.branch.budget_steps,
                               limits.INT32_MAX // STEP_HEADROOM),
                              ("evaluation.limit", self.evaluation.limit, limits.INT32_MAX)):
            if v > most:
                out.append(f"{name} must be at most {most:,} (got {v:,})")
        ev = self.evaluation
        unknown = [b for b in ev.benchmarks if b not in BENCHMARKS]
        if unknown or not ev.benchmarks:
            out.append(f"evaluation.benchmarks: unknown or none {unknown}; choose from {', '.join(BENCHMARKS)}")
        extra_limits = sorted(set(ev.limits) - set(ev.benchmarks))
        if extra_limits:
            out.append(f"evaluation.limits names benchmarks that are not evaluated: {', '.join(extra_limits)}")
        for name, v in [("limit", ev.limit)] + [(f"limits.{b}", v) for b, v in ev.limits.items()]:
            if v < 0:
                out.append(f"evaluation.{name} must be >= 0, 0 = all items (got {v})")
        if not 1 <= ev.batch_size <= 1024:
            out.append(f"evaluation.batch_size must be between 1 and 1024 (got {ev.batch_size})")
        from lab.evaluation.spec import EVAL_PRECISIONS
        if ev.precision not in EVAL_PRECISIONS:
            out.append(f"evaluation.precision must be one of {', '.join(EVAL_PRECISIONS)} (got {ev.precision!r})")
        if not 0 <= ev.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            out.append(f"evaluation.max_new_tokens must be between 0 and {MAX_NEW_TOKENS_LIMIT} (got {ev.max_new_tokens})")
        bad_families = sorted(set(ev.data) - {"gsm8k", "csqa"})
        if bad_families:
            out.append(f"evaluation.data: unknown data kind(s) {bad_families}; use gsm8k and csqa")
        for b in [b for b in ev.benchmarks if b in BENCHMARKS]:
            out += [f"evaluation: {p}" for p in check_data(b, self.data_for(b))]
        return out

    def data_for(self, benchmark: str) -> str | None:
        """The data file of a benchmark (None: the built-in generator)."""
        from lab.evaluation import BENCHMARKS
        family = BENCHMARKS[benchmark].data
        return self.evaluation.data.get(family) if family in ("gsm8k", "csqa") else None

    def validate(self, data_dir: str | Path | None = None) -> "ExperimentSpec":
        probs = self.problems(data_dir)
        if probs:
            raise LabError("Invalid experiment spec:\n- " + "\n- ".join(probs))
        return self


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read a spec file (YAML or JSON); LabError when it cannot be read or is malformed."""
    from lab.config import load_config_file
    p = Path(path).expanduser()
    if not p.is_file():
        raise LabError(f"Experiment spec {p} does not exist (or is not a file).")
    return ExperimentSpec.from_dict(load_config_file(p), source=str(p))


def presets() -> dict[str, Path]:
    """Preset id -> spec file (lab/experiments/presets/<id>.yaml)."""
    return {p.stem: p for p in sorted(PRESET_DIR.glob("*.yaml"))}


def load_preset(preset_id: str) -> ExperimentSpec:
    found = presets()
    if preset_id not in found:
        raise LabError(f"Unknown experiment preset {preset_id!r}; choose one of {', '.join(found)}.")
    return load_spec(found[preset_id])


# ---- helpers -------------------------------------------------------------------------------------
def _builtin_or_hf(corpus: str) -> bool:
    from lab.corpora import BUILTIN
    return corpus.strip() in BUILTIN or corpus.startswith("hf:")


def _model_problems(model: str, data_dir) -> list[str]:
    """The model check when it is cheap; a hub id (slow, needs the network) is left to the job."""
    from lab.models import PRESETS, check_model_spec
    model = (model or "").strip()
    if not model:
        return ["model is empty: give a preset (e.g. tiny-random), a folder, a hub id or run:ID"]
    local = model in PRESETS or model.startswith(("run:", ".", "/", "~")) or Path(model).expanduser().exists()
    if not local:
        return []
    try:
        check_model_spec(model, data_dir or "data")
    except LabError as e:
        return [f"model: {e}"]
    return []


def _training_problems(where: str, section: dict[str, Any]) -> list[str]:
    from lab.config import RunConfig
    known = {f.name for f in fields(RunConfig)} - set(RESERVED)
    out = []
    reserved = sorted(set(section) & set(RESERVED))
    if reserved:
        out.append(f"{where}: {', '.join(reserved)} cannot be set here (the experiment sets them)")
    unknown = sorted(set(section) - known - set(RESERVED))
    if unknown:
        out.append(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return out


def _config_problems(training: dict[str, Any], objective: str, params: dict[str, Any],
                     model: str) -> list[str]:
    """RunConfig.validate's messages for these settings (reserved or unknown keys are
    reported by _training_problems), one string per problem."""
    from lab.config import RunConfig
    known = {f.name for f in fields(RunConfig)} - set(RESERVED)
    try:
        RunConfig.from_dict({**{k: v for k, v in training.items() if k in known},
                             "objective": objective, "model": model, "params": params}).validate()
    except LabError as e:
        text = str(e)
        return [b.strip() for b in (text.split("\n- ")[1:] if "\n- " in text else [text])]
    return []


def _build(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    """`value` (from YAML) as type `tp`: dataclasses field by field, lists, dicts, scalars.
    Appends a message naming the key to `problems` for every mismatch."""
    where = path or "the spec"
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{where} must be a mapping of settings (got {type(value).__name__})")
            return None
        hints = typing.get_type_hints(tp)
        known = [f.name for f in fields(tp)]
        unknown = sorted(set(value) - set(known))
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(known)}")
        kwargs = {}
        for f in fields(tp):
            sub = f"{path}.{f.name}" if path else f.name
            if f.name in value and value[f.name] is not None:
                kwargs[f.name] = _build(hints[f.name], value[f.name], sub, problems)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{sub} is missing")
                kwargs[f.name] = None
        try:
            return tp(**kwargs)
        except TypeError as e:        # only after a reported problem
            problems.append(f"{where}: {e}")
            return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _build(next(a for a in args if a is not type(None)), value, path, problems)
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{where} must be a list (got {value!r})")
            return []
        return [_build(args[0], v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where} must be a mapping (got {value!r})")
            return {}
        return {str(k): _build(args[1], v, f"{path}.{k}", problems) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where} must be true or false (got {value!r})")
        return bool(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where} must be a whole number (got {value!r})")
            return 0
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where} must be a number (got {value!r})")
            return 0.0
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            problems.append(f"{where} must be text (got {value!r})")
            return ""
        return str(value)
    return value
