"""Experiments: every objective trained on the same model, corpus and compute budget, then
scored on the same benchmark items next to the base model and the controls of
objectives.md §5. All jobs of an experiment share `runs.experiment = <id>`.

    exp = launch_experiment("tiny-random", "builtin", objectives=("ntp", "quiet-star"),
                            budget_steps=20, benchmarks=["math-test", "csqa"],
                            data={"csqa": "../shared/data/commonsenseqa_dev.jsonl"}, limit=20)
    experiment_results(store, exp)          # one row per eval
    deltas(store, exp, against="ntp")       # paired deltas with bootstrap CIs and McNemar p

Matched compute (objectives.md §0). `budget_mode="flops"`: the budget is the training FLOPs
of `budget_steps` NTP steps of the same batch shape; every run stops once its cumulative
FLOPs reach it (so NTP runs exactly `budget_steps` steps and a costlier objective fewer;
each run overshoots by at most its last step). `budget_mode="steps"`: every run does
`budget_steps` optimizer steps, whatever they cost. `compute_table` shows what each run
actually used, so a reader sees what was matched.

At matched FLOPs a costlier objective takes fewer steps than NTP, so a flops-mode experiment
also compares at matched steps (`steps_control`, on by default): the NTP run starts after the
other runs have ended, keeps a checkpoint at each one's final step count, and that checkpoint
is evaluated too (`run:NTP@steps-of:OTHER`). The learning rate is constant after warm-up, so
NTP's checkpoint at step S is what an S-step NTP run would have produced.

What is queued, per benchmark: each trained run's checkpoint (after its training ends),
the base model, the Quiet-STaR run with its thoughts and with corrupted thoughts ("are
thoughts scaffolding?"), and, when GSM8K data is given, the base model with and without
chain of thought ("latent reasoning" control).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from lab.config import RunConfig
from lab.errors import LabError
from lab.evaluation import BENCHMARKS, EvalSpec, compare
from lab.flops import train_flops
from lab.store import Store, new_run_id

DEFAULT_OBJECTIVES = ("ntp", "quiet-star", "rlp", "rpt")
BUDGET_MODES = ("flops", "steps")
THOUGHT_CONTROLS = ("thoughts", "corrupted")
# Base-model pairs of the "latent reasoning" control: the CoT benchmark vs its direct twin.
COT_TWIN = {"gsm8k-cot": "gsm8k"}
# flops mode: max_steps only guards against a runaway; the FLOP budget ends the run.
STEP_HEADROOM = 100
# Rounding guard: k steps summed one by one must reach a budget of k steps' FLOPs.
BUDGET_TOLERANCE = 1e-9

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
DEFAULT_DATA = {"gsm8k": SHARED_DATA / "gsm8k_test.jsonl",
                "csqa": SHARED_DATA / "commonsenseqa_dev.jsonl"}

# Small objective settings that keep a CPU experiment to minutes (the objectives' own
# defaults follow the papers and are much heavier).
SMALL_PARAMS: dict[str, dict[str, Any]] = {
    "quiet-star": dict(n_ahead=4, n_ahead_talk=2, n_passes=2),
    "rlp": dict(group_size=2, max_thought_tokens=8),
    "rpt": dict(group_size=2, max_new_tokens=8, warmup_steps_format=1, entropy_threshold=0.0),
}

EXPERIMENT_PRESETS: dict[str, dict[str, Any]] = {
    # Thought-mode evals generate without a KV cache: generation benchmarks dominate the time,
    # so GSM8K is scored on the base model only (the CoT control) and answers are short.
    "quick CPU (tiny-random, 8 NTP steps, 20 items, ~5 min)": dict(
        model="tiny-random", corpus="builtin", budget_steps=8, budget_mode="flops",
        benchmarks=["math-test", "csqa"], limit=20, max_new_tokens=16,
        base_cfg=dict(seq_len=64, batch_size=4, lr=1e-3, warmup_steps=0, corpus_docs=200,
                      sample_every=1, n_samples=2, checkpoint_every=0),
        params=SMALL_PARAMS),
    "SmolLM2-135M on CPU (10 NTP steps, 20 items, ~30 min)": dict(
        model="smollm2-135m", corpus="builtin", budget_steps=10, budget_mode="flops",
        benchmarks=["math-test", "csqa", "gsm8k"], limit=20, max_new_tokens=64,
        base_cfg=dict(seq_len=128, batch_size=4, lr=1e-5, warmup_steps=2, corpus_docs=500,
                      sample_every=2, n_samples=2, checkpoint_every=0),
        params=SMALL_PARAMS),
    "GPU: SmolLM2-135M, Quiet-STaR paper settings (100 NTP steps, 200 items)": dict(
        model="smollm2-135m", corpus="builtin", budget_steps=100, budget_mode="flops",
        benchmarks=["math-test", "math-longer", "math-format", "gsm8k", "csqa"], limit=200,
        max_new_tokens=0,
        base_cfg=dict(seq_len=256, batch_size=8, lr=1e-6, warmup_steps=20, sample_every=10,
                      checkpoint_every=0, device="gpu"),
        params={}),
}


# ---- launching ---------------------------------------------------------------------------------
def describe_spec(model: str, data_dir: str | Path = "data", trust_remote_code: bool = False) -> dict:
    """lab.models.describe of a model spec without reading its weights (built on the meta
    device), so budgeting an experiment costs no model load."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lab.models import (TINY_PRESETS, describe, resolve_checkpoint, smol_tokenizer,
                            smollm2_folder, tiny_config)
    if model in TINY_PRESETS:
        config = tiny_config(model, smol_tokenizer())
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
    n_proc = 1
    if cfg.device in ("auto", "gpu"):
        n_proc = min(cfg.num_gpus, gpu_count()) or 1
    micro = train_flops(desc, cfg.batch_size * cfg.seq_len, cfg.seq_len)
    return micro * cfg.grad_accum * n_proc


def data_for(benchmark: str, data: dict[str, str] | None) -> str | None:
    """The data file of a benchmark from {"gsm8k": path, "csqa": path} (None = built-in)."""
    family = BENCHMARKS[benchmark].data
    if family in ("gsm8k", "csqa"):
        path = (data or {}).get(family)
        if not path:
            raise LabError(f"benchmark {benchmark} needs a {family} data file "
                           f"(e.g. {DEFAULT_DATA[family]}).")
        return str(path)
    return None


@dataclass
class ExperimentPlan:
    """A validated experiment, before any job exists: the training configs per objective and
    the evaluations as (spec, objective whose checkpoint it scores, or None = base model), and
    the matched-steps evaluations of NTP as (spec, objective whose step count NTP matches)."""
    id: str
    label: str
    budget_flops: float
    configs: dict[str, RunConfig]
    evals: list[tuple[EvalSpec, str | None]]
    matched_evals: list[tuple[EvalSpec, str]] = field(default_factory=list)

    @property
    def matched_objectives(self) -> list[str]:
        return list(dict.fromkeys(obj for _, obj in self.matched_evals))

    def ntp_config(self, run_ids: dict[str, str]) -> RunConfig:
        """NTP's config once the other runs exist: with matched-steps evaluations it starts
        after them and keeps a checkpoint at each one's final step."""
        others = [run_ids[o] for o in self.matched_objectives]
        return dataclasses.replace(self.configs["ntp"], after=others, checkpoint_steps_of=others)

    def eval_name(self, spec: EvalSpec, objective: str | None) -> str:
        mode = "" if spec.thought_mode == "none" else f" ({spec.thought_mode})"
        return f"{self.label} · {spec.benchmark} · {objective or 'base'}{mode}"

    def matched_name(self, spec: EvalSpec, objective: str) -> str:
        return f"{self.label} · {spec.benchmark} · ntp at the steps of {objective}"


def plan_experiment(model: str, corpus: str = "builtin", *,
                    objectives: Sequence[str] = DEFAULT_OBJECTIVES, budget_steps: int = 20,
                    budget_mode: str = "flops", benchmarks: Sequence[str] = ("math-test",),
                    data: dict[str, str] | None = None, limit: int = 20,
                    max_new_tokens: int = 0, base_cfg: dict[str, Any] | None = None,
                    params: dict[str, dict[str, Any]] | None = None,
                    thought_modes: Sequence[str] = THOUGHT_CONTROLS, cot_control: bool = True,
                    steps_control: bool = True, name: str = "",
                    data_dir: str | Path = "data") -> ExperimentPlan:
    """Build and validate every training config and eval spec of an experiment (module
    docstring); raises LabError naming the problem. Starts nothing."""
    from jobs.manager import validate
    if budget_mode not in BUDGET_MODES:
        raise LabError(f"budget_mode must be one of {', '.join(BUDGET_MODES)} (got {budget_mode!r})")
    if int(budget_steps) < 1:
        raise LabError(f"budget_steps must be at least 1 (got {budget_steps})")
    objectives = list(dict.fromkeys(objectives))
    if not objectives:
        raise LabError("Pick at least one objective.")
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown or not benchmarks:
        raise LabError(f"Unknown or no benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}.")
    for b in benchmarks:
        data_for(b, data)                      # a missing data file fails before anything slow
    exp = "exp-" + new_run_id()
    label = name or exp

    # Training configs. The budget is computed on a validated NTP config of the same shape.
    base = {**(base_cfg or {}), "model": model, "corpus": corpus, "experiment": exp}
    shape = validate(RunConfig.from_dict({**base, "objective": "ntp", "max_steps": budget_steps}),
                     data_dir)
    budget = 0.0
    if budget_mode == "flops":
        step = ntp_step_flops(shape, describe_spec(model, data_dir, shape.trust_remote_code))
        budget = budget_steps * step * (1 - BUDGET_TOLERANCE)
    configs = {}
    for obj in objectives:
        cfg = RunConfig.from_dict({
            **base, "objective": obj, "name": f"{label} · {obj}", "max_flops": budget,
            "max_steps": budget_steps * (STEP_HEADROOM if budget_mode == "flops" else 1),
            "params": {**(params or {}).get(obj, {})}})
        configs[obj] = cfg.validate()     # model and corpus: checked once, on `shape` above

    # Evaluations. Specs of trained runs get their checkpoint once the run exists; the base
    # model stands in to validate them.
    common = dict(limit=limit, max_new_tokens=max_new_tokens,
                  extra={"experiment": exp, "budget_mode": budget_mode, "budget_steps": budget_steps,
                         "budget_flops": budget})
    benches = list(dict.fromkeys(benchmarks))
    base_benches = list(benches)
    if cot_control and (data or {}).get("gsm8k"):
        base_benches += [b for b in ("gsm8k", "gsm8k-cot") if b not in base_benches]
    evals: list[tuple[EvalSpec, str | None]] = []
    for obj in [*objectives, None]:
        modes = ["none"] + (list(thought_modes) if obj == "quiet-star" else [])
        evals += [(EvalSpec(model=model, benchmark=b, data=data_for(b, data), thought_mode=m,
                            **common), obj)
                  for b in (base_benches if obj is None else benches) for m in modes]
    matched: list[tuple[EvalSpec, str]] = []
    if steps_control and budget_mode == "flops" and "ntp" in configs:
        matched = [(EvalSpec(model=model, benchmark=b, data=data_for(b, data), **common), obj)
                   for obj in objectives if obj != "ntp" for b in benches]
        configs["ntp"] = configs.pop("ntp")          # trained last: it reads the others' steps
    for spec, _ in [*evals, *matched]:
        spec.validate()
    return ExperimentPlan(exp, label, budget, configs, evals, matched)


def launch_experiment(model: str, corpus: str = "builtin", *, data_dir: str | Path = "data",
                      **settings: Any) -> str:
    """Plan an experiment (settings as in plan_experiment: objectives, budget_steps,
    budget_mode, benchmarks, data, limit, max_new_tokens, base_cfg, params, thought_modes,
    cot_control, name) and start it as background jobs: the training runs, and the evals
    queued behind them. Everything is validated first, so bad input never leaves half an
    experiment behind. Returns the experiment id."""
    from jobs.manager import submit, submit_eval
    from lab.models import STEPS_OF
    plan = plan_experiment(model, corpus, data_dir=data_dir, **settings)
    run_ids: dict[str, str] = {}
    for obj, cfg in plan.configs.items():
        run_ids[obj] = submit(plan.ntp_config(run_ids) if obj == "ntp" else cfg, data_dir)
    for spec, obj in plan.evals:
        after = []
        if obj is not None:
            after = [run_ids[obj]]
            spec.model, spec.run_id = f"run:{run_ids[obj]}", run_ids[obj]
        submit_eval(spec, data_dir, after=after, experiment=plan.id, name=plan.eval_name(spec, obj))
    for spec, obj in plan.matched_evals:
        ntp = run_ids["ntp"]
        spec.model, spec.run_id = f"run:{ntp}{STEPS_OF}{run_ids[obj]}", ntp
        submit_eval(spec, data_dir, after=[ntp, run_ids[obj]], experiment=plan.id,
                    name=plan.matched_name(spec, obj))
    return plan.id


def run_inline(plan: ExperimentPlan, store: Store) -> str:
    """Run a plan in this process, one job after the other, with no background jobs (tests,
    notebooks). The rows look like launch_experiment's. Returns the experiment id."""
    from jobs.manager import eval_job_config
    from lab.evaluation import run_eval
    from lab.evaluation.runner import run_id_of
    from lab.models import STEPS_OF, pin_steps_of
    from lab.store import now
    from lab.train import train
    run_ids: dict[str, str] = {}
    for obj, cfg in plan.configs.items():
        cfg = plan.ntp_config(run_ids) if obj == "ntp" else cfg
        rid = store.create_run(config=cfg.to_dict(), status="running")
        train(cfg, rid, store)
        store.update_run(rid, status="finished", finished_at=now())
        run_ids[obj] = rid
    jobs = [(spec, f"run:{run_ids[obj]}" if obj else spec.model, plan.eval_name(spec, obj))
            for spec, obj in plan.evals]
    jobs += [(spec, pin_steps_of(f"run:{run_ids['ntp']}{STEPS_OF}{run_ids[obj]}", store.data_dir),
              plan.matched_name(spec, obj)) for spec, obj in plan.matched_evals]
    for spec, model_spec, name in jobs:
        spec.model, spec.run_id = model_spec, run_id_of(model_spec)
        eid = store.create_run(kind="eval", status="running", config=eval_job_config(spec, plan.id, name))
        run_eval(spec, store, eval_id=eid)
        store.update_run(eid, status="finished", step=100, finished_at=now())
    return plan.id


# ---- reading results ---------------------------------------------------------------------------
def experiments(store: Store) -> pd.DataFrame:
    """One row per experiment (newest first): id, created_at, runs, active jobs, name."""
    return store.query(
        "SELECT experiment AS id, min(created_at) AS created_at, count(*) AS jobs, "
        "sum(CASE WHEN status IN ('queued', 'running') THEN 1 ELSE 0 END) AS active, "
        "sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed, "
        "string_agg(DISTINCT CASE WHEN kind = 'train' THEN objective END, ', ') AS objectives, "
        "min(CASE WHEN kind = 'train' THEN model END) AS model "
        "FROM runs WHERE experiment <> '' GROUP BY experiment ORDER BY created_at DESC")


def experiment_runs(store: Store, experiment_id: str) -> pd.DataFrame:
    """Every job of an experiment (training first), with status and progress."""
    return store.query(
        "SELECT id, kind, name, objective, model, status, step, max_steps, error, created_at, "
        "started_at, finished_at FROM runs WHERE experiment = ? "
        "ORDER BY kind DESC, created_at, id", [experiment_id])


def compute_table(store: Store, experiment_id: str) -> pd.DataFrame:
    """Per training run: steps done, cumulative training FLOPs, the FLOP budget and the share
    of it used: what a comparison at matched compute actually matched."""
    runs = store.query(
        "SELECT r.id AS run_id, r.objective, r.status, r.config, m.steps, m.flops "
        "FROM runs r LEFT JOIN (SELECT run_id, max(step) AS steps, max(flops) AS flops FROM metrics "
        "  WHERE run_id IN (SELECT id FROM runs WHERE experiment = ?) GROUP BY run_id) m "
        "ON m.run_id = r.id WHERE r.experiment = ? AND r.kind = 'train' ORDER BY r.created_at, r.id",
        [experiment_id, experiment_id])
    cfgs = [json.loads(c or "{}") for c in runs.pop("config")]
    runs["steps"] = runs["steps"].fillna(0).astype(int)
    runs["flops"] = runs["flops"].fillna(0.0).astype(float)
    runs["budget_flops"] = [float(c.get("max_flops") or 0.0) for c in cfgs]
    runs["budget_share"] = [f / b if b else math.nan for f, b in zip(runs["flops"], runs["budget_flops"])]
    runs["flops_per_step"] = [f / s if s else math.nan for f, s in zip(runs["flops"], runs["steps"])]
    runs["max_steps"] = [int(c.get("max_steps") or 0) for c in cfgs]
    return runs


def _flops_at(store: Store, run_ids: list[str]) -> pd.DataFrame:
    if not run_ids:
        return pd.DataFrame(columns=["run_id", "step", "flops"])
    marks = ", ".join("?" for _ in run_ids)
    return store.query(f"SELECT run_id, step, max(flops) AS flops FROM metrics WHERE run_id IN ({marks}) "
                       "GROUP BY run_id, step ORDER BY run_id, step", run_ids)


RESULT_COLUMNS = ["eval_id", "label", "objective", "run_id", "model", "benchmark", "mode",
                  "thought_mode", "score", "stderr", "n", "higher_is_better", "steps", "flops",
                  "max_flops", "data", "limit", "created_at"]


def results_for_evals(store: Store, eval_ids: Sequence[str]) -> pd.DataFrame:
    """experiment_results' table for any set of evals (the page's 'individual evals' view)."""
    if not eval_ids:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    marks = ", ".join("?" for _ in eval_ids)
    return _results(store, f"e.id IN ({marks})", list(eval_ids))


def experiment_results(store: Store, experiment_id: str) -> pd.DataFrame:
    """One row per finished eval of the experiment (its eval jobs, and any eval of its trained
    runs): label, objective ('base' for the untrained model), benchmark, mode, thought_mode,
    score, stderr, n, and the evaluated checkpoint's training steps and FLOPs."""
    return _results(store, "(e.id IN (SELECT id FROM runs WHERE experiment = ? AND kind = 'eval') "
                           "OR e.run_id IN (SELECT id FROM runs WHERE experiment = ? AND kind = 'train'))",
                    [experiment_id, experiment_id])


def _results(store: Store, where: str, params: list[Any]) -> pd.DataFrame:
    ev = store.query(
        "SELECT e.id AS eval_id, e.run_id, e.model, e.benchmark, e.mode, e.n_items AS n, e.score, "
        "e.stderr, e.config, e.created_at, r.objective, r.config AS run_config "
        f"FROM evals e LEFT JOIN runs r ON r.id = e.run_id WHERE {where} "
        "ORDER BY e.created_at, e.id", params)
    if ev.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    flops = _flops_at(store, sorted(set(ev["run_id"].dropna())))
    rows = []
    for r in ev.to_dict("records"):
        spec = json.loads(r["config"] or "{}").get("spec", {})
        run_cfg = json.loads(r["run_config"] or "{}") if isinstance(r["run_config"], str) else {}
        run_id = r["run_id"] if isinstance(r["run_id"], str) else None
        steps, fl, at = 0, 0.0, None
        if run_id:
            at = str(r["model"]).partition("@")[2]       # run:ID@STEP evaluates that checkpoint
            f = flops[flops["run_id"] == run_id]
            if at.isdigit():
                f = f[f["step"] <= int(at)]
            if not f.empty:
                steps, fl = int(f["step"].iloc[-1]), float(f["flops"].iloc[-1])
        objective = r["objective"] if run_id and isinstance(r["objective"], str) else "base"
        tm = spec.get("thought_mode") or "none"
        label = objective + (f"@{at}" if at else "") + ("" if tm == "none" else f" +{tm}")
        bench = BENCHMARKS.get(r["benchmark"])
        rows.append({"eval_id": r["eval_id"], "label": label, "objective": objective,
                     "run_id": run_id, "model": r["model"], "benchmark": r["benchmark"],
                     "mode": r["mode"], "thought_mode": tm, "score": r["score"],
                     "stderr": r["stderr"], "n": int(r["n"]),
                     "higher_is_better": bench.higher_is_better if bench else True,
                     "steps": steps, "flops": fl, "max_flops": float(run_cfg.get("max_flops") or 0.0),
                     "data": spec.get("data"), "limit": spec.get("limit"), "created_at": r["created_at"]})
    out = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    # Two runs of one objective in an experiment would share a label: add the run id.
    dup = out.duplicated(["label", "benchmark"], keep=False) & out["run_id"].notna()
    out.loc[dup, "label"] = out.loc[dup, "label"] + " [" + out.loc[dup, "run_id"].str[-4:] + "]"
    return out


# ---- paired comparisons ------------------------------------------------------------------------
DELTA_COLUMNS = ["label", "reference", "benchmark", "benchmark_ref", "eval_ref", "eval_id", "n",
                 "score_ref", "score", "delta", "stderr", "ci_low", "ci_high", "p_mcnemar",
                 "n_right_to_wrong", "n_wrong_to_right", "higher_is_better", "matched",
                 "steps_ref", "steps", "flops_ref", "flops"]


def _matched(ref: dict, row: dict) -> str:
    """What the pair has in common: the FLOP budget, the step count, or neither."""
    if ref["objective"] == "base" or row["objective"] == "base":
        return "base model (no training)" if ref["objective"] == row["objective"] else "vs untrained"
    at_checkpoint = "@" in ref["label"] or "@" in row["label"]     # an intermediate checkpoint
    if ref["max_flops"] and ref["max_flops"] == row["max_flops"] and not at_checkpoint:
        return "FLOPs"
    if ref["steps"] == row["steps"]:
        return "steps"
    return "neither"


def compare_pairs(store: Store, pairs: list[tuple[dict, dict]]) -> pd.DataFrame:
    """lab.evaluation.compare on (reference, evaluated) result rows -> one delta row each
    (delta = evaluated - reference, on the items both scored). Pairs without shared items
    are left out."""
    out = []
    for ref, row in pairs:
        try:
            c = compare(store, ref["eval_id"], row["eval_id"])
        except LabError:
            continue
        out.append({"label": row["label"], "reference": ref["label"], "benchmark": row["benchmark"],
                    "benchmark_ref": ref["benchmark"], "eval_ref": ref["eval_id"],
                    "eval_id": row["eval_id"], "n": c["n"], "score_ref": c["score_a"],
                    "score": c["score_b"], "delta": c["delta"], "stderr": c["stderr"],
                    "ci_low": c["ci_low"], "ci_high": c["ci_high"], "p_mcnemar": c["p_mcnemar"],
                    "n_right_to_wrong": c["n_right_to_wrong"], "n_wrong_to_right": c["n_wrong_to_right"],
                    "higher_is_better": c["higher_is_better"], "matched": _matched(ref, row),
                    "steps_ref": ref["steps"], "steps": row["steps"],
                    "flops_ref": ref["flops"], "flops": row["flops"]})
    return (pd.DataFrame(out, columns=DELTA_COLUMNS)
            .sort_values(["benchmark", "label", "reference"], kind="stable").reset_index(drop=True))


def _plain(results: pd.DataFrame) -> pd.DataFrame:
    """Final checkpoints evaluated without thoughts: the rows references are taken from."""
    return results[(results["thought_mode"] == "none") & ~results["label"].str.contains("@")]


def deltas(store: Store, experiment_id: str, against: str = "base",
           results: pd.DataFrame | None = None) -> pd.DataFrame:
    """Paired deltas of every eval against the base model's or the NTP run's eval of the same
    benchmark (latest one when repeated). Against 'base' this includes the CoT control (base
    gsm8k-cot vs base gsm8k); against 'ntp' it covers the reasoning objectives, at matched
    FLOPs (NTP's final checkpoint) and, when evaluated, at matched steps (NTP's checkpoint at
    the objective's step count); the `matched` column says which."""
    if against not in ("base", "ntp"):
        raise LabError(f"against must be 'base' or 'ntp' (got {against!r})")
    res = experiment_results(store, experiment_id) if results is None else results
    refs = {r["benchmark"]: r for r in _plain(res[res["objective"] == against]).to_dict("records")}
    # NTP's intermediate checkpoints: the matched-steps references of a flops experiment.
    at_steps = {(r["benchmark"], r["steps"]): r for r in res[
        (res["objective"] == "ntp") & (res["thought_mode"] == "none") & res["label"].str.contains("@")
    ].to_dict("records")} if against == "ntp" else {}
    pairs = []
    for row in res.to_dict("records"):
        if row["objective"] == "base":
            if against != "base" or row["benchmark"] not in COT_TWIN:
                continue
            ref = refs.get(COT_TWIN[row["benchmark"]])
        elif against == "ntp" and row["objective"] == "ntp":
            continue
        else:
            ref = refs.get(row["benchmark"])
        if ref is not None and ref["eval_id"] != row["eval_id"]:
            pairs.append((ref, row))
        same_steps = at_steps.get((row["benchmark"], row["steps"]))
        if same_steps is not None and "@" not in row["label"]:
            pairs.append((same_steps, row))
    return compare_pairs(store, pairs)


def thought_deltas(store: Store, experiment_id: str, results: pd.DataFrame | None = None) -> pd.DataFrame:
    """The §5 thought control for each Quiet-STaR checkpoint: with thoughts vs without, and
    corrupted thoughts vs real ones (a delta near 0 there means thoughts act as scaffolding)."""
    res = experiment_results(store, experiment_id) if results is None else results
    qs = res[res["objective"] == "quiet-star"]
    pairs = []
    for (_, _, _), g in qs.groupby(["run_id", "model", "benchmark"]):
        by_mode = {r["thought_mode"]: r for r in g.to_dict("records")}   # latest per mode
        for a, b in (("none", "thoughts"), ("none", "corrupted"), ("thoughts", "corrupted")):
            if a in by_mode and b in by_mode:
                pairs.append((by_mode[a], by_mode[b]))
    return compare_pairs(store, pairs)


def flipped_items(store: Store, eval_ref: str, eval_id: str) -> pd.DataFrame:
    """The items whose outcome changed from the reference eval to the other: direction
    ('right→wrong' / 'wrong→right'), item id, prompt, target, both predictions and generations."""
    c = compare(store, eval_ref, eval_id)
    ids = {**{i: "right→wrong" for i in c["right_to_wrong"]}, **{i: "wrong→right" for i in c["wrong_to_right"]}}
    cols = ["direction", "item_id", "prompt", "target", "prediction_ref", "prediction",
            "output_ref", "output"]
    if not ids:
        return pd.DataFrame(columns=cols)
    marks = ", ".join("?" for _ in ids)
    items = store.query(f"SELECT eval_id, item_id, prediction, target, extra FROM eval_items "
                        f"WHERE eval_id IN (?, ?) AND item_id IN ({marks})",
                        [eval_ref, eval_id, *ids])
    prompts = _prompts(store, eval_id, list(ids))
    rows = []
    for item, direction in ids.items():
        a = items[(items["eval_id"] == eval_ref) & (items["item_id"] == item)]
        b = items[(items["eval_id"] == eval_id) & (items["item_id"] == item)]
        if a.empty or b.empty:
            continue
        ea, eb = a.iloc[0], b.iloc[0]
        rows.append({"direction": direction, "item_id": item, "prompt": prompts.get(item, ""),
                     "target": eb["target"], "prediction_ref": ea["prediction"],
                     "prediction": eb["prediction"], "output_ref": _output(ea["extra"]),
                     "output": _output(eb["extra"])})
    return pd.DataFrame(rows, columns=cols).sort_values(["direction", "item_id"], kind="stable")


def _output(extra: str | None) -> str:
    """What the model wrote (or, for log-likelihood scoring, the choice it preferred)."""
    e = json.loads(extra or "{}")
    if "reasoning" in e:
        return f"{e['reasoning']} → {e.get('final_generation', '')}"
    return str(e.get("generation") or e.get("prediction_text") or "")


def _prompts(store: Store, eval_id: str, item_ids: list[str]) -> dict[str, str]:
    """The exact prompts of some items, rebuilt from the eval's spec (the items are taken in
    file / generator order, so the same spec gives the same prompts)."""
    from lab.evaluation.benchmarks import load_items
    ev = store.query("SELECT benchmark, config FROM evals WHERE id = ?", [eval_id])
    if ev.empty:
        return {}
    spec = json.loads(ev["config"].iloc[0] or "{}").get("spec", {})
    try:
        items = load_items(ev["benchmark"].iloc[0], spec.get("data"), int(spec.get("limit") or 0))
    except (LabError, OSError):
        return {}
    wanted = set(item_ids)
    return {it.id: it.prompt for it in items if it.id in wanted}
