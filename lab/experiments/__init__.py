"""Experiments: arms (NTP, Quiet-STaR, RLP, RPT, or variants) trained from the same model —
optionally after a shared NTP pretraining — on the same corpus at a matched compute budget,
each with several seeds, then scored on the same items next to the base model and the
controls of objectives.md §5. All jobs of an experiment share `runs.experiment = <id>`.

    spec = load_preset("quick-cpu")                 # or load_spec("my.yaml")
    exp = launch(spec, data_dir)                    # returns at once; a driver starts the jobs
    experiment_progress(store, exp)                 # one weighted progress figure and ETA
    res = experiment_results(store, exp)            # one row per (eval, metric), explicit columns
    pooled_deltas(store, exp, "reference", res)     # seed-pooled deltas vs the reference arm

The modules: spec (the YAML spec and its checks), plan (spec -> jobs), driver (launching and
starting jobs), results (reading back), compare (pooled and per-seed comparisons), summary
(the answer in words), progress (one progress bar), cli (`python -m lab experiment`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from lab.experiments.compare import (compare_pairs, flipped_items, pooled, pooled_deltas,
                                     seed_pairs, thought_deltas)
from lab.experiments.driver import (cancel, driver_alive, launch, read_state, resume, run_inline,
                                    stored_spec)
from lab.experiments.plan import (STEP_HEADROOM, ExperimentPlan, describe_spec, make_plan,
                                  ntp_step_flops)
from lab.experiments.progress import experiment_progress
from lab.experiments.results import (compute_table, experiment_results, experiment_runs,
                                     experiments, results_for_evals, titles)
from lab.experiments.spec import (ARM_CHOICES, BUDGET_MODES, DEFAULT_SEEDS, Arm, Branch, Controls,
                                  Evaluation, ExperimentSpec, Pretrain, load_preset, load_spec,
                                  presets)
from lab.store import new_run_id

ROOT = Path(__file__).resolve().parent.parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
DEFAULT_DATA = {"gsm8k": SHARED_DATA / "gsm8k_test.jsonl",
                "csqa": SHARED_DATA / "commonsenseqa_dev.jsonl"}
DEFAULT_OBJECTIVES = ("ntp", "quiet-star", "rlp", "rpt")
THOUGHT_CONTROLS = ("thoughts", "corrupted")

__all__ = ["ARM_CHOICES", "Arm", "BUDGET_MODES", "Branch", "Controls", "DEFAULT_DATA", "Evaluation",
           "ExperimentPlan", "ExperimentSpec", "Pretrain", "STEP_HEADROOM", "cancel",
           "compare_pairs", "compute_table", "describe_spec", "driver_alive", "experiment_progress",
           "experiment_results", "experiment_runs", "experiments", "flipped_items", "launch",
           "launch_experiment", "load_preset", "load_spec", "make_plan", "ntp_step_flops",
           "plan_experiment", "pooled", "pooled_deltas", "presets", "read_state",
           "results_for_evals", "resume", "run_inline", "seed_pairs", "spec_from_settings",
           "stored_spec", "thought_deltas", "titles"]


def spec_from_settings(model: str, corpus: str = "builtin", *,
                       objectives: Sequence[str] = DEFAULT_OBJECTIVES, budget_steps: int = 20,
                       budget_mode: str = "flops", benchmarks: Sequence[str] = ("math-test",),
                       data: dict[str, Any] | None = None, limit: int = 20, max_new_tokens: int = 0,
                       base_cfg: dict[str, Any] | None = None,
                       params: dict[str, dict[str, Any]] | None = None,
                       thought_modes: Sequence[str] = THOUGHT_CONTROLS, cot_control: bool = True,
                       steps_control: bool = True, name: str = "", seeds: int = DEFAULT_SEEDS,
                       pretrain_steps: int = 0) -> ExperimentSpec:
    """The spec of the keyword interface (one arm per objective, id = the objective)."""
    arms = [{"id": o, "objective": o, "params": dict((params or {}).get(o, {})),
             **({"thought_modes": list(thought_modes)} if o == "quiet-star" else {})}
            for o in dict.fromkeys(objectives)]
    return ExperimentSpec.from_dict({
        "title": name, "model": model, "corpus": corpus, "training": dict(base_cfg or {}),
        "pretrain": {"steps": int(pretrain_steps)},
        "branch": {"budget_mode": budget_mode, "budget_steps": int(budget_steps)},
        "arms": arms, "seeds": int(seeds),
        "evaluation": {"benchmarks": list(benchmarks), "limit": int(limit),
                       "max_new_tokens": int(max_new_tokens),
                       "data": {k: str(v) for k, v in (data or {}).items() if v}},
        "controls": {"thought_modes": bool(thought_modes), "cot": cot_control,
                     "matched_steps": steps_control}})


def plan_experiment(model: str, corpus: str = "builtin", *, data_dir: str | Path = "data",
                    **settings: Any) -> ExperimentPlan:
    """Build and validate every job of an experiment given as keywords (spec_from_settings);
    raises LabError naming the problem. Starts nothing."""
    return make_plan(spec_from_settings(model, corpus, **settings), "exp-" + new_run_id(), data_dir)


def launch_experiment(model: str, corpus: str = "builtin", *, data_dir: str | Path = "data",
                      **settings: Any) -> str:
    """Launch an experiment given as keywords (spec_from_settings); returns its id at once."""
    return launch(spec_from_settings(model, corpus, **settings), data_dir)
