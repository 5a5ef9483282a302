"""Named read queries: every SELECT of the pages, reports, experiments and evaluation lives
here (or, for single rows of one table, in lab/store.py). Each returns explicit columns, so a
caller never depends on a table's column order, and no caller outside these two modules
writes SQL. Writes go through Store's methods (one writer per table)."""
from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from lab.store import Store

# Per-position statistics of the reward heatmap: fixed SQL chosen by name, never user text.
THOUGHT_AGGREGATES = {"mean reward": "avg(reward)", "max reward": "max(reward)",
                      "NLL gain (base − with thought)": "avg(base_nll - mixed_nll)"}


def _marks(values: Sequence[object]) -> str:
    """One '?' placeholder per value, for an SQL IN list."""
    return ", ".join("?" for _ in values)


# ---- runs and their logged rows ------------------------------------------------------------------
def run_ids_with_rows(store: Store, table: str) -> set[str]:
    """Ids of the runs with at least one row in `table` (tokens, thoughts, metrics or evals)."""
    assert table in ("tokens", "thoughts", "metrics", "evals")
    return set(store.query(f"SELECT DISTINCT run_id FROM {table} WHERE run_id IS NOT NULL")["run_id"])


def recent_step_time(store: Store, run_id: str) -> float | None:
    """Mean duration of the run's last 10 steps (None before the first step is logged)."""
    df = store.query("SELECT avg(value) AS t FROM (SELECT value FROM metrics WHERE run_id = ? AND "
                     "name = 'step_time_s' ORDER BY step DESC LIMIT 10)", [run_id])
    t = df["t"].iloc[0] if not df.empty else None
    return None if t is None or pd.isna(t) else float(t)


def run_totals(store: Store, run_id: str) -> dict[str, float]:
    """What a run has done so far: last logged step, cumulative FLOPs and wall seconds (0 when
    nothing is logged)."""
    row = store.query("SELECT max(step) AS steps, max(flops) AS flops, max(wall_time) AS wall "
                      "FROM metrics WHERE run_id = ?", [run_id]).iloc[0]
    return {k: (0.0 if pd.isna(row[k]) else float(row[k])) for k in ("steps", "flops", "wall")}


def max_flops(store: Store, run_ids: Sequence[str]) -> dict[str, float]:
    """Run id -> cumulative training FLOPs logged so far."""
    if not run_ids:
        return {}
    marks = _marks(run_ids)
    m = store.query(f"SELECT run_id, max(flops) AS flops FROM metrics WHERE run_id IN ({marks}) "
                    "GROUP BY run_id", list(run_ids))
    return dict(zip(m["run_id"], m["flops"].fillna(0.0)))


def flops_by_step(store: Store, run_ids: Sequence[str]) -> pd.DataFrame:
    """run_id, step, flops (cumulative at that step), ordered by run and step."""
    if not run_ids:
        return pd.DataFrame(columns=["run_id", "step", "flops"])
    marks = _marks(run_ids)
    return store.query(f"SELECT run_id, step, max(flops) AS flops FROM metrics WHERE run_id IN ({marks}) "
                       "GROUP BY run_id, step ORDER BY run_id, step", list(run_ids))


def entropy_values(store: Store, run_id: str) -> pd.DataFrame:
    """step, entropy of every logged token with an entropy."""
    return store.query("SELECT step, entropy FROM tokens WHERE run_id = ? AND entropy IS NOT NULL "
                       "ORDER BY step", [run_id])


def forking_overlap(store: Store, run_id: str, last_step: int) -> pd.DataFrame:
    """step_a, overlap: the share of each step's forking positions that are also forking at
    `last_step` (same sample and position)."""
    return store.query(
        """WITH f AS (SELECT step, sample, position FROM tokens WHERE run_id = ? AND forking)
           SELECT a.step AS step_a, avg(CASE WHEN b.position IS NULL THEN 0 ELSE 1 END) AS overlap
           FROM f a LEFT JOIN f b ON a.sample = b.sample AND a.position = b.position AND b.step = ?
           GROUP BY a.step ORDER BY a.step""", [run_id, last_step])


def thought_samples(store: Store, run_id: str) -> list[int]:
    return store.query("SELECT DISTINCT sample FROM thoughts WHERE run_id = ? ORDER BY sample",
                       [run_id])["sample"].tolist()


def thought_grid(store: Store, run_id: str, sample: int, statistic: str) -> pd.DataFrame:
    """step, position, v: one THOUGHT_AGGREGATES statistic per (step, position) of a sample."""
    agg = THOUGHT_AGGREGATES[statistic]
    return store.query(f"SELECT step, position, {agg} AS v FROM thoughts WHERE run_id = ? AND sample = ? "
                       "GROUP BY step, position ORDER BY step, position", [run_id, sample])


def thought_rewards(store: Store, run_id: str, sample: int, step: int) -> pd.DataFrame:
    """position, idx, reward of every thought of one sample at one step."""
    return store.query("SELECT position, idx, reward FROM thoughts WHERE run_id = ? AND sample = ? "
                       "AND step = ? ORDER BY position, idx", [run_id, sample, step])


def top_thoughts(store: Store, run_id: str, limit: int) -> pd.DataFrame:
    """The best-rewarded thoughts, best first (several may share a position)."""
    return store.query("SELECT step, sample, position, kind, text, reward, weight, base_nll, mixed_nll, "
                       "prediction, target FROM thoughts WHERE run_id = ? AND reward IS NOT NULL "
                       "ORDER BY reward DESC, step DESC LIMIT ?", [run_id, limit])


def text_before(store: Store, run_id: str, step: int, sample: int, position: int, n_tokens: int) -> str:
    """The logged text of the `n_tokens` tokens before `position`."""
    toks = store.query("SELECT token FROM tokens WHERE run_id = ? AND step = ? AND sample = ? "
                       "AND position < ? AND position >= ? ORDER BY position",
                       [run_id, step, sample, position, position - n_tokens])
    return "".join(toks["token"].astype(str))


def queued_in_order(store: Store) -> pd.DataFrame:
    """Queued runs, first in line first (queued_at; created_at for rows from before it existed):
    the FIFO order jobs/queue.py and the supervisors follow."""
    return store.query("SELECT id, pid, phase, config, slurm_job FROM runs WHERE status = 'queued' "
                       "ORDER BY coalesce(queued_at, created_at), created_at, id")


def run_statuses(store: Store) -> dict[str, str]:
    """Run id -> status, for every run."""
    return dict(store.query("SELECT id, status FROM runs").itertuples(index=False))


# ---- evaluations ------------------------------------------------------------------------------------
def evals_by_id(store: Store, eval_ids: Sequence[str]) -> pd.DataFrame:
    """id, benchmark, mode, model, run_id, score, n_items, config of these evals."""
    if not eval_ids:
        return pd.DataFrame(columns=["id", "benchmark", "mode", "model", "run_id", "score", "n_items", "config"])
    marks = _marks(eval_ids)
    return store.query(f"SELECT id, benchmark, mode, model, run_id, score, n_items, config FROM evals "
                       f"WHERE id IN ({marks})", list(eval_ids))


def evals_of_benchmark(store: Store, benchmark: str) -> pd.DataFrame:
    """Every eval of one benchmark, oldest first."""
    return store.query("SELECT id, run_id, model, mode, n_items, score, stderr, created_at, config "
                       "FROM evals WHERE benchmark = ? ORDER BY created_at", [benchmark])


def eval_ids_of_run(store: Store, run_id: str) -> list[str]:
    return store.query("SELECT id FROM evals WHERE run_id = ? ORDER BY created_at", [run_id])["id"].tolist()


def all_evals(store: Store) -> pd.DataFrame:
    """id, model, benchmark, score, n_items, config, created_at of every eval, newest first."""
    return store.query("SELECT id, model, benchmark, score, n_items, config, created_at FROM evals "
                       "ORDER BY created_at DESC")


def item_scores(store: Store, eval_id: str) -> pd.DataFrame:
    """item_id, correct of one eval."""
    return store.query("SELECT item_id, correct FROM eval_items WHERE eval_id = ? ORDER BY item_id", [eval_id])


def item_rows(store: Store, eval_ids: Sequence[str], item_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """eval_id, item_id, correct, prediction, target, extra (JSON text) of these evals' items
    (only `item_ids` when given)."""
    if not eval_ids or (item_ids is not None and not item_ids):
        return pd.DataFrame(columns=["eval_id", "item_id", "correct", "prediction", "target", "extra"])
    sql = ("SELECT eval_id, item_id, correct, prediction, target, extra FROM eval_items "
           f"WHERE eval_id IN ({_marks(eval_ids)})")
    params = list(eval_ids)
    if item_ids is not None:
        sql += f" AND item_id IN ({_marks(item_ids)})"
        params += list(item_ids)
    return store.query(sql + " ORDER BY eval_id, item_id", params)


def item_metrics(store: Store, eval_ids: Sequence[str]) -> pd.DataFrame:
    """eval_id, item_id, correct, metrics (JSON text of the per-item secondary metrics)."""
    marks = _marks(eval_ids)
    return store.query("SELECT eval_id, item_id, correct, json_extract(extra, '$.metrics') AS metrics "
                       f"FROM eval_items WHERE eval_id IN ({marks})", list(eval_ids))


def eval_result_rows(store: Store, *, experiment: str | None = None,
                     eval_ids: Sequence[str] = ()) -> pd.DataFrame:
    """Evals joined with their training run (objective, run_config): every eval of an
    experiment (its eval jobs, and any eval of its trained runs), or the given evals."""
    if experiment is not None:
        where = ("(json_extract_string(e.config, '$.spec.extra.experiment') = ? "
                 "OR e.id IN (SELECT id FROM runs WHERE experiment = ? AND kind = 'eval') "
                 "OR e.run_id IN (SELECT id FROM runs WHERE experiment = ? AND kind = 'train'))")
        params: list[Any] = [experiment] * 3
    else:
        where, params = f"e.id IN ({_marks(eval_ids)})", list(eval_ids)
    return store.query(
        "SELECT e.id AS eval_id, e.run_id, e.model, e.benchmark, e.mode, e.n_items AS n, e.score, "
        "e.stderr, e.config, e.created_at, r.objective, r.config AS run_config "
        f"FROM evals e LEFT JOIN runs r ON r.id = e.run_id WHERE {where} "
        "ORDER BY e.created_at, e.id", params)


# ---- experiments ------------------------------------------------------------------------------------
def experiment_job_counts(store: Store) -> pd.DataFrame:
    """Per experiment with jobs: id, created_at, jobs, active, failed, objectives, model."""
    return store.query(
        "SELECT experiment AS id, min(created_at) AS created_at, count(*) AS jobs, "
        "sum(CASE WHEN status IN ('queued', 'running') THEN 1 ELSE 0 END) AS active, "
        "sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed, "
        "string_agg(DISTINCT CASE WHEN kind = 'train' THEN objective END, ', ') AS objectives, "
        "min(CASE WHEN kind = 'train' THEN model END) AS model "
        "FROM runs WHERE experiment <> '' GROUP BY experiment")


def experiment_jobs(store: Store, experiment_id: str) -> pd.DataFrame:
    """Every job of an experiment in plan order (creation order)."""
    return store.query(
        "SELECT id, kind, name, objective, model, status, step, max_steps, error, phase, created_at, "
        "started_at, finished_at, pid, config FROM runs WHERE experiment = ? ORDER BY created_at, id",
        [experiment_id])


def active_job_ids(store: Store, experiment_id: str) -> list[str]:
    return store.query("SELECT id FROM runs WHERE experiment = ? AND status IN ('queued', 'running') "
                       "ORDER BY created_at, id", [experiment_id])["id"].tolist()


def unstarted_jobs(store: Store, experiment_id: str) -> pd.DataFrame:
    """id, kind, config of the experiment's queued jobs whose supervisor was never started."""
    return store.query("SELECT id, kind, config FROM runs WHERE experiment = ? AND status = 'queued' "
                       "AND pid IS NULL ORDER BY created_at, id", [experiment_id])


def experiment_train_totals(store: Store, experiment_id: str) -> pd.DataFrame:
    """Per training run of an experiment: run_id, objective, status, config, steps, flops, wall."""
    return store.query(
        "SELECT r.id AS run_id, r.objective, r.status, r.config, m.steps, m.flops, m.wall "
        "FROM runs r LEFT JOIN (SELECT run_id, max(step) AS steps, max(flops) AS flops, "
        "max(wall_time) AS wall FROM metrics "
        "  WHERE run_id IN (SELECT id FROM runs WHERE experiment = ?) GROUP BY run_id) m "
        "ON m.run_id = r.id WHERE r.experiment = ? AND r.kind = 'train' ORDER BY r.created_at, r.id",
        [experiment_id, experiment_id])

