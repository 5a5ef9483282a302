"""From a spec to the jobs of an experiment, before any job exists.

Matched compute (objectives.md §0). `budget_mode: flops`: the budget is the training FLOPs of
`budget_steps` NTP steps of the shared batch shape; every arm stops once its cumulative FLOPs
reach it (NTP runs exactly `budget_steps` steps, a costlier objective fewer; a run overshoots
by at most half a step). `budget_mode: steps`: every arm does `budget_steps` optimizer steps.

Matched steps: at a FLOP budget a costlier arm takes fewer steps, so (with
controls.matched_steps) the reference arm of each seed starts after that seed's other arms,
keeps a checkpoint at each one's final step count, and those checkpoints are evaluated too
(`run:REF@steps-of:OTHER`). The learning rate is constant after warm-up, so the reference's
checkpoint at step S is what an S-step run would have produced.

Pretrain, then branch: with `pretrain.steps`, one NTP run pretrains the base; every arm of
every seed continues from its final checkpoint (`model: run:<pretrain id>`), and the base of
every comparison is that checkpoint. Its checkpoint does not exist when the jobs are queued,
so the branch runs' model check happens when they start.

Evaluations: one job per evaluated checkpoint and thought mode, covering every benchmark
(one process and one model load for all of them): each arm's final checkpoint per seed, the
reference at the others' step counts, Quiet-STaR arms with real and corrupted thoughts (an arm
trained on random thoughts: with random thoughts only, as trained), the
base model, and (with GSM8K data) the base with and without chain of thought.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.config import RunConfig
from lab.evaluation import EvalSpec
from lab.evaluation.benchmarks import HELDOUT_BENCHMARKS
from lab.experiments.spec import STEP_HEADROOM, ExperimentSpec
from lab.flops import train_flops

# Rounding guard: k steps summed one by one must reach a budget of k steps' FLOPs.
BUDGET_TOLERANCE = 1e-9
# Base-model pairs of the "latent reasoning" control: the CoT benchmark vs its direct twin.
COT_TWIN = {"gsm8k-cot": "gsm8k"}


@dataclass
class Job:
    """One job of the plan. Other jobs are named by `key` until they have run ids."""
    key: str                                   # unique in the experiment, e.g. "train/ntp/s0"
    kind: str                                  # "train" | "eval"
    arm: str                                   # arm id, or "base"
    seed: int | None                           # None: shared by every seed (the base)
    name: str
    config: RunConfig | None = None            # train: model/after hold the spec's values
    specs: list[EvalSpec] = field(default_factory=list)   # eval: one per benchmark
    after: list[str] = field(default_factory=list)        # job keys it waits for
    model_of: str | None = None                # job key whose checkpoint is this job's model
    steps_of: str | None = None                # eval: the checkpoint at this job's final steps
    keep_steps_of: list[str] = field(default_factory=list)  # train: checkpoints to keep
    reference_of: str | None = None            # eval: heldout-nll's entropy model (a job key)


@dataclass
class ExperimentPlan:
    id: str
    spec: ExperimentSpec
    budget_flops: float
    jobs: list[Job]

    def job(self, key: str) -> Job:
        return next(j for j in self.jobs if j.key == key)

    @property
    def configs(self) -> dict[str, RunConfig]:
        """Training configs by job key (pretraining and arms)."""
        return {j.key: j.config for j in self.jobs if j.kind == "train"}


def describe_spec(model: str, data_dir: str | Path = "data", trust_remote_code: bool = False) -> dict:
    """lab.models.describe of a model spec without reading its weights (built on the meta
    device), so budgeting an experiment costs no model load."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lab.models import SCRATCH_PRESETS, describe, resolve_checkpoint, scratch_config, smollm2_folder
    if model in SCRATCH_PRESETS:
        config = scratch_config(model)[0]
    else:
        folder: Path | str = (smollm2_folder() if model == "smollm2-135m" else
                              resolve_checkpoint(model, data_dir) if model.startswith("run:") else model)
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return describe(meta)


def ntp_step_flops(cfg: RunConfig, desc: dict) -> float:
    """Training FLOPs of one NTP optimizer step of cfg's batch shape, counted as lab.train
    counts them (packed windows: every position is a token; all processes summed)."""
    from jobs.manager import gpu_count
    from jobs.topology import job_topology
    n_proc = job_topology(cfg.to_dict(), "train", gpu_count() if cfg.device in ("auto", "gpu") else 0).processes
    micro = train_flops(desc, cfg.batch_size * cfg.seq_len, cfg.seq_len)
    return micro * cfg.grad_accum * n_proc


def random_init(model: str) -> bool:
    """True when the model's weights come from the seed (a preset built from a config):
    without pretraining, each seed then has its own base model."""
    from lab.models import PRESETS
    return model in PRESETS and model != "smollm2-135m"


def make_plan(spec: ExperimentSpec, exp_id: str, data_dir: str | Path = "data") -> ExperimentPlan:
    """Every job of the experiment, validated; the slow checks (model spec, corpus, the FLOP
    budget from the model's shape) happen here. Starts nothing."""
    from jobs.manager import validate
    spec.validate(data_dir)
    label = spec.title or exp_id
    shared = {**spec.training, "model": spec.model, "corpus": spec.corpus, "experiment": exp_id}
    shape = validate(RunConfig.from_dict({**shared, "objective": "ntp",
                                          "max_steps": spec.branch.budget_steps}), data_dir)
    budget = 0.0
    if spec.branch.budget_mode == "flops":
        step = ntp_step_flops(shape, describe_spec(spec.model, data_dir, shape.trust_remote_code))
        budget = spec.branch.budget_steps * step * (1 - BUDGET_TOLERANCE)
    titles = spec.titles()
    jobs: list[Job] = []
    base_after: list[str] = []
    if spec.pretrain.steps:
        cfg = RunConfig.from_dict({**shared, **spec.pretrain.training, "objective": "ntp", "arm": "base",
                                   "seed": spec.pretrain.seed, "max_steps": spec.pretrain.steps,
                                   "name": f"{label} · {titles['base']}"}).validate()
        jobs.append(Job("pretrain", "train", "base", None, cfg.name, config=cfg))
        base_after = ["pretrain"]
    extra = {"experiment": exp_id, "budget_mode": spec.branch.budget_mode,
             "budget_steps": spec.branch.budget_steps, "budget_flops": budget}
    per_seed_base = not spec.pretrain.steps and random_init(spec.model)
    if not per_seed_base:
        jobs.append(_base_eval(spec, label, titles, None, base_after, extra))
    ref = spec.reference_arm
    matched = (spec.controls.matched_steps and spec.branch.budget_mode == "flops"
               and len(spec.arms) > 1)
    for seed in spec.seeds:
        if per_seed_base:
            jobs.append(_base_eval(spec, label, titles, seed, [], extra))
        others = [a for a in spec.arms if a.id != ref]
        for arm in [*others, spec.arm(ref)]:          # the reference last: it reads their steps
            keep = [f"train/{a.id}/s{seed}" for a in others] if matched and arm.id == ref else []
            cfg = RunConfig.from_dict({
                **shared, **arm.training, "objective": arm.objective, "arm": arm.id, "seed": seed,
                "params": dict(arm.params), "max_flops": budget,
                "max_steps": spec.branch.budget_steps * (STEP_HEADROOM if budget else 1),
                "name": f"{label} · {arm.display} · seed {seed}"}).validate()
            jobs.append(Job(f"train/{arm.id}/s{seed}", "train", arm.id, seed, cfg.name, config=cfg,
                            after=base_after + keep, model_of=base_after[0] if base_after else None,
                            keep_steps_of=keep))
        for arm in spec.arms:
            for mode in ["none", *spec.thought_modes_of(arm)]:
                suffix = ("" if mode == "none" else " with random thoughts"
                          if arm.random_thoughts else f" ({mode} thoughts)")
                jobs.append(_eval(spec, f"eval/{arm.id}/s{seed}/{mode}", arm.id, seed,
                                  f"{label} · {arm.display}{suffix} · seed {seed}",
                                  f"train/{arm.id}/s{seed}", list(spec.evaluation.benchmarks), mode, extra,
                                  base_after))
        if matched:
            for arm in others:
                job = _eval(spec, f"eval/{ref}/s{seed}/steps-of/{arm.id}", ref, seed,
                            f"{label} · {titles[ref]} at the steps of {arm.display} · seed {seed}",
                            f"train/{ref}/s{seed}", list(spec.evaluation.benchmarks), "none",
                            {**extra, "steps_of": arm.id}, base_after)
                job.steps_of = f"train/{arm.id}/s{seed}"
                job.after.append(job.steps_of)
                jobs.append(job)
    for job in jobs:
        for s in job.specs:
            s.validate()
    return ExperimentPlan(exp_id, spec, budget, jobs)


def _base_eval(spec: ExperimentSpec, label: str, titles: dict[str, str], seed: int | None,
               base_after: list[str], extra: dict) -> Job:
    benches = list(spec.evaluation.benchmarks)
    if spec.controls.cot and spec.evaluation.data.get("gsm8k"):
        benches += [b for b in ("gsm8k", "gsm8k-cot") if b not in benches]
    key = "eval/base" + ("" if seed is None else f"/s{seed}")
    name = f"{label} · {titles['base']}" + ("" if seed is None else f" · seed {seed}")
    return _eval(spec, key, "base", seed, name, base_after[0] if base_after else None, benches,
                 "none", extra, base_after)


def _eval(spec: ExperimentSpec, key: str, arm: str, seed: int | None, name: str,
          model_of: str | None, benchmarks: list[str], mode: str, extra: dict,
          base_after: list[str]) -> Job:
    """An eval job of one checkpoint (model_of; None = the spec's model) on every benchmark.
    heldout-nll picks its forking tokens by the base model's entropy, so every checkpoint is
    scored on the same tokens."""
    ev = spec.evaluation
    specs = [EvalSpec(model=spec.model, benchmark=b, data=spec.data_for(b), limit=spec.limit_of(b),
                      batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens,
                      seed=seed or 0, thought_mode=mode, precision=ev.precision,
                      extra={**extra, "arm": arm, "seed": seed, "steps_of": extra.get("steps_of", "")})
             for b in benchmarks]
    base_key = base_after[0] if base_after else None
    trained = model_of is not None and model_of != base_key
    if trained and base_key is None:
        for s in specs:
            if s.benchmark in HELDOUT_BENCHMARKS:
                s.reference = spec.model            # the untrained model (of the same seed)
    return Job(key, "eval", arm, seed, name, specs=specs,
               after=[model_of] if model_of else [], model_of=model_of,
               reference_of=base_key if trained else None)


# ---- job ids ----------------------------------------------------------------------------------
def materialise(job: Job, ids: dict[str, str]) -> Job:
    """The job with other jobs' keys replaced by their run ids (model specs, after lists)."""
    from lab.models import STEPS_OF
    after = [ids[k] for k in job.after]
    if job.kind == "train":
        cfg = dataclasses.replace(job.config, after=after,
                                  checkpoint_steps_of=[ids[k] for k in job.keep_steps_of])
        if job.model_of:
            cfg.model = f"run:{ids[job.model_of]}"
        return dataclasses.replace(job, config=cfg, after=after)
    specs = []
    for s in job.specs:
        s = dataclasses.replace(s, extra=dict(s.extra))
        if job.model_of:
            s.run_id = ids[job.model_of]
            s.model = f"run:{s.run_id}" + (f"{STEPS_OF}{ids[job.steps_of]}" if job.steps_of else "")
        if job.reference_of and s.benchmark in HELDOUT_BENCHMARKS:
            s.reference = f"run:{ids[job.reference_of]}"
        specs.append(s)
    return dataclasses.replace(job, specs=specs, after=after)


def plan_summary(plan: ExperimentPlan) -> dict[str, Any]:
    """Counts for messages: training runs, eval jobs, evaluations."""
    train = [j for j in plan.jobs if j.kind == "train"]
    evals = [j for j in plan.jobs if j.kind == "eval"]
    return {"train": len(train), "eval_jobs": len(evals), "evals": sum(len(j.specs) for j in evals)}
