"""Reading an experiment back: its jobs, the compute each run used, and one result row per
(evaluation, metric) with explicit columns. Labels are built here for display only; no code
reads them back.

Result columns: `arm` (arm id, "base" for the base model), `objective` ("" for an untrained
model), `seed` (None for a base shared by every seed), `checkpoint_step`, `is_final` (the
run's last checkpoint), `thought_mode`, `matched` (the arm whose final step count this
checkpoint matches: the reference's matched-steps checkpoints; "" otherwise), `metric` and
`primary` (the benchmark's own score, or a per-item secondary metric such as answer_nll).
Its SQL lives in lab/queries.py.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from lab import queries
from lab.evaluation import BENCHMARKS
from lab.experiments.driver import experiments_dir, read_state, stored_spec
from lab.store import Store

RESULT_COLUMNS = ["eval_id", "label", "arm", "objective", "seed", "run_id", "model", "benchmark",
                  "metric", "primary", "mode", "thought_mode", "score", "stderr", "n",
                  "higher_is_better", "checkpoint_step", "is_final", "matched", "flops",
                  "max_flops", "data", "limit", "created_at"]
# Per-item secondary metrics are NLLs: lower is better.
SECONDARY_HIGHER_IS_BETTER = False


# ---- experiments and their jobs -----------------------------------------------------------------
def experiments(store: Store) -> pd.DataFrame:
    """One row per experiment, newest first: id, title, state, created_at, jobs, active,
    failed, arms, model. Experiments with a stored spec appear as soon as they are launched,
    before their jobs exist."""
    runs = queries.experiment_job_counts(store)
    rows = {r["id"]: {**r, "title": "", "state": ""} for r in runs.to_dict("records")}
    folder = experiments_dir(store.data_dir)
    for path in (folder.glob("*.yaml") if folder.exists() else []):
        exp = path.stem
        state = read_state(store.data_dir, exp)
        try:
            spec = stored_spec(store.data_dir, exp)
        except Exception:  # noqa: BLE001 - a damaged spec file must not hide the others
            spec = None
        row = rows.setdefault(exp, {"id": exp, "created_at": pd.Timestamp(state.get("created_at") or 0),
                                    "jobs": 0, "active": 0, "failed": 0, "objectives": "", "model": ""})
        row["title"] = spec.title if spec else ""
        row["model"] = row.get("model") or (spec.model if spec else "")
        row["state"] = state.get("state", "")
    cols = ["id", "title", "state", "created_at", "jobs", "active", "failed", "objectives", "model"]
    out = pd.DataFrame(list(rows.values()), columns=cols)
    return out.sort_values("created_at", ascending=False, kind="stable").reset_index(drop=True)


def experiment_runs(store: Store, experiment_id: str) -> pd.DataFrame:
    """Every job of an experiment in plan order, with its arm, seed and status."""
    df = queries.experiment_jobs(store, experiment_id).drop(columns=["pid"])
    cfgs = [json.loads(c or "{}") for c in df.pop("config")]
    df["arm"] = [_job_arm(c) for c in cfgs]
    df["seed"] = pd.array([_job_seed(c) for c in cfgs], dtype="Int64")
    df["benchmarks"] = [", ".join(s["benchmark"] for s in c.get("specs", [])) or c.get("benchmark", "")
                        for c in cfgs]
    df["max_flops"] = [float(c.get("max_flops") or 0.0) for c in cfgs]
    return df


def _job_arm(cfg: dict) -> str:
    if "specs" in cfg:
        return (cfg["specs"][0].get("extra") or {}).get("arm", "")
    return cfg.get("arm") or ("" if cfg.get("objective") == "eval" else cfg.get("objective", ""))


def _job_seed(cfg: dict) -> int | None:
    if "specs" in cfg:
        return (cfg["specs"][0].get("extra") or {}).get("seed")
    return None if cfg.get("objective") == "eval" or cfg.get("arm") == "base" else cfg.get("seed")


def compute_table(store: Store, experiment_id: str) -> pd.DataFrame:
    """Per training run: arm, seed, steps done, cumulative training FLOPs, the FLOP budget and
    the share of it used (what a comparison at matched compute actually matched)."""
    runs = queries.experiment_train_totals(store, experiment_id)
    cfgs = [json.loads(c or "{}") for c in runs.pop("config")]
    runs.insert(1, "arm", [c.get("arm") or c.get("objective", "") for c in cfgs])
    runs.insert(2, "seed", pd.array([_job_seed(c) for c in cfgs], dtype="Int64"))
    runs["steps"] = runs["steps"].fillna(0).astype(int)
    runs["flops"] = runs["flops"].fillna(0.0).astype(float)
    runs["budget_flops"] = [float(c.get("max_flops") or 0.0) for c in cfgs]
    runs["budget_share"] = [f / b if b else math.nan for f, b in zip(runs["flops"], runs["budget_flops"])]
    runs["flops_per_step"] = [f / s if s else math.nan for f, s in zip(runs["flops"], runs["steps"])]
    runs["max_steps"] = [int(c.get("max_steps") or 0) for c in cfgs]
    return runs


def titles(store: Store, experiment_id: str) -> dict[str, str]:
    """Arm id -> display title (from the stored spec; the id itself otherwise)."""
    try:
        spec = stored_spec(store.data_dir, experiment_id)
    except Exception:  # noqa: BLE001
        spec = None
    return spec.titles() if spec else {"base": "base model"}


# ---- one row per (evaluation, metric) ------------------------------------------------------------
def experiment_results(store: Store, experiment_id: str) -> pd.DataFrame:
    """Every finished evaluation of the experiment (its eval jobs, and any eval of its
    trained runs), one row per metric; columns RESULT_COLUMNS."""
    return _results(store, queries.eval_result_rows(store, experiment=experiment_id),
                    titles(store, experiment_id))


def results_for_evals(store: Store, eval_ids: Sequence[str]) -> pd.DataFrame:
    """The same table for any set of evals (the page's 'individual evals' view)."""
    if not eval_ids:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    return _results(store, queries.eval_result_rows(store, eval_ids=eval_ids), {})


def evals_of_run(store: Store, run_id: str) -> list[str]:
    return queries.eval_ids_of_run(store, run_id)


def all_evals(store: Store) -> pd.DataFrame:
    """Every eval, newest first: id, model, benchmark, score, n_items, thought_mode, created_at."""
    df = queries.all_evals(store)
    df["thought_mode"] = [json.loads(c or "{}").get("spec", {}).get("thought_mode", "none")
                          for c in df.pop("config")]
    return df


def _results(store: Store, ev: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    if ev.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    flops = queries.flops_by_step(store, sorted(set(ev["run_id"].dropna())))
    rows = []
    for r in ev.to_dict("records"):
        cfg = json.loads(r["config"] or "{}")
        spec, extra = cfg.get("spec", {}), cfg.get("spec", {}).get("extra") or {}
        run_cfg = json.loads(r["run_config"]) if isinstance(r["run_config"], str) else {}
        run_id = r["run_id"] if isinstance(r["run_id"], str) else None
        at = str(r["model"]).partition("@")[2] if run_id else ""     # run:ID@STEP: that checkpoint
        f = flops[flops["run_id"] == run_id] if run_id else flops.iloc[0:0]
        final_step = int(f["step"].max()) if not f.empty else 0
        step = int(at) if at.isdigit() else final_step
        f = f[f["step"] <= step]
        arm = extra.get("arm") or run_cfg.get("arm") or (r["objective"] if run_id else "base")
        seed = extra["seed"] if "seed" in extra else (
            run_cfg.get("seed") if run_id and arm != "base" else None)
        tm = spec.get("thought_mode") or "none"
        matched = extra.get("steps_of") or ""
        base = {"eval_id": r["eval_id"], "arm": arm,
                "objective": r["objective"] if run_id and isinstance(r["objective"], str) else "",
                "seed": None if seed is None or (isinstance(seed, float) and math.isnan(seed)) else int(seed),
                "run_id": run_id, "model": r["model"], "benchmark": r["benchmark"], "mode": r["mode"],
                "thought_mode": tm, "checkpoint_step": step, "is_final": step == final_step,
                "matched": matched, "flops": float(f["flops"].iloc[-1]) if not f.empty else 0.0,
                "max_flops": float(run_cfg.get("max_flops") or 0.0), "data": spec.get("data"),
                "limit": spec.get("limit"), "created_at": r["created_at"],
                # Outside an experiment (no arm titles) a result is named by its model, so two
                # evals of untrained models do not both read "base".
                "label": display_label(names or {arm: str(r["model"])}, arm, tm, matched,
                                       None if step == final_step else step)}
        bench = BENCHMARKS.get(r["benchmark"])
        rows.append({**base, "metric": cfg.get("metric") or "acc", "primary": True, "score": r["score"],
                     "stderr": r["stderr"], "n": int(r["n"]),
                     "higher_is_better": bench.higher_is_better if bench else True})
        for name in cfg.get("item_metrics") or []:
            m = (cfg.get("metrics") or {}).get(name) or {}
            rows.append({**base, "metric": name, "primary": False, "score": m.get("score"),
                         "stderr": m.get("stderr"), "n": int(m.get("n") or 0),
                         "higher_is_better": SECONDARY_HIGHER_IS_BETTER})
    out = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    out["seed"] = out["seed"].astype("Int64")        # None (a shared base) stays missing
    return out


def display_label(names: dict[str, str], arm: str, thought_mode: str = "none", matched: str = "",
                  step: int | None = None) -> str:
    """How a result is named on the page and in reports (never parsed back)."""
    text = names.get(arm, arm)
    if matched:
        text += f" @ steps of {names.get(matched, matched)}"
    elif step is not None:
        text += f" @{step}"
    return text + ("" if thought_mode == "none" else f" +{thought_mode}")


def item_values(store: Store, eval_ids: Sequence[str]) -> pd.DataFrame:
    """Per item of these evals: eval_id, item_id, correct (the primary score) and `metrics`
    (the per-item secondary metrics, a dict)."""
    if not eval_ids:
        return pd.DataFrame(columns=["eval_id", "item_id", "correct", "metrics"])
    df = queries.item_metrics(store, eval_ids)
    df["metrics"] = [json.loads(m) if isinstance(m, str) else {} for m in df["metrics"]]
    return df


def item_prompts(store: Store, eval_id: str, item_ids: list[str]) -> dict[str, str]:
    """The exact prompts of some items, rebuilt from the eval's spec (items are taken in
    file / generator order, so the same spec gives the same prompts)."""
    from lab.errors import LabError
    from lab.evaluation.benchmarks import load_items
    ev = queries.evals_by_id(store, [eval_id])
    if ev.empty:
        return {}
    spec = json.loads(ev["config"].iloc[0] or "{}").get("spec", {})
    try:
        items = load_items(ev["benchmark"].iloc[0], spec.get("data"), int(spec.get("limit") or 0))
    except (LabError, OSError):
        return {}
    wanted = set(item_ids)
    return {it.id: it.prompt for it in items if it.id in wanted}


def eval_items(store: Store, eval_ids: Sequence[str], item_ids: Sequence[str]) -> pd.DataFrame:
    return queries.item_rows(store, eval_ids, item_ids).drop(columns=["correct"])


def training_metrics(store: Store, run_ids: list[str], names: Sequence[str]) -> pd.DataFrame:
    return store.metrics(run_ids, list(names))


def top_thought_rows(store: Store, run_id: str, k: int, context_tokens: int) -> pd.DataFrame:
    """The k best-rewarded thoughts (one per position), each with the text before it."""
    th = queries.top_thoughts(store, run_id, k * 20)
    th = th.drop_duplicates(["step", "sample", "position"]).head(k)
    contexts = [queries.text_before(store, run_id, r["step"], r["sample"], r["position"], context_tokens)
                for r in th.to_dict("records")]
    th.insert(3, "context", contexts)
    return th


def spec_text(store: Store, experiment_id: str) -> str:
    """The stored spec file's text ('' for experiments launched before spec files)."""
    from lab.experiments.driver import spec_path
    p = spec_path(store.data_dir, experiment_id)
    return p.read_text(encoding="utf-8") if Path(p).exists() else ""


SCORE_COLUMNS = ["label", "arm", "thought_mode", "matched", "benchmark", "metric", "primary",
                 "higher_is_better", "mean", "sd", "min", "max", "n_seeds", "seeds", "scores", "n",
                 "steps", "flops", "eval_ids"]


def score_table(res: pd.DataFrame) -> pd.DataFrame:
    """Scores across seeds: one row per (arm, thought mode, matched, benchmark, metric) of
    final (or matched-steps) checkpoints, with the mean, sample sd, min and max over seeds and
    each seed's score. Mid-run checkpoints evaluated by hand are left out."""
    keep = res[res["is_final"].astype(bool) | (res["matched"] != "")]
    if keep.empty:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    keep = keep.sort_values("created_at", kind="stable").assign(
        _seed=keep["seed"].fillna(-1)).drop_duplicates(
        ["arm", "thought_mode", "matched", "benchmark", "metric", "_seed"], keep="last")
    rows = []
    for _, g in keep.groupby(["arm", "thought_mode", "matched", "benchmark", "metric"], sort=False):
        g = g.sort_values("_seed")
        s = g["score"].astype(float)
        rows.append({"label": g["label"].iloc[0], "arm": g["arm"].iloc[0],
                     "thought_mode": g["thought_mode"].iloc[0], "matched": g["matched"].iloc[0],
                     "benchmark": g["benchmark"].iloc[0], "metric": g["metric"].iloc[0],
                     "primary": bool(g["primary"].iloc[0]),
                     "higher_is_better": bool(g["higher_is_better"].iloc[0]), "mean": s.mean(),
                     "sd": s.std(ddof=1) if len(s) > 1 else math.nan, "min": s.min(), "max": s.max(),
                     "n_seeds": len(s), "seeds": [None if pd.isna(v) else int(v) for v in g["seed"]],
                     "scores": s.tolist(), "n": int(g["n"].min()),
                     "steps": float(g["checkpoint_step"].mean()), "flops": float(g["flops"].mean()),
                     "eval_ids": g["eval_id"].tolist()})
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)
