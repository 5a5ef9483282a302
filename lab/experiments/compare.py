"""Comparisons inside an experiment, on the same items.

Pooled over seeds (the tables and the summary): an arm's results for one benchmark and metric
form a group, one eval per seed; `pooled_deltas` compares each group with its reference group
through lab.evaluation.stats.seed_pooled_delta (point estimate, two-level bootstrap CI over
items and seeds, per-seed deltas, seed-to-seed spread). References:

- against "reference" (the NTP arm): its final checkpoint (matched: FLOPs, or steps in a
  steps-mode experiment), and its checkpoint at the arm's own step count (matched: steps);
- against "base": the base model (shared, or one per seed for a random-init model without
  pretraining), and the latent-reasoning control (base gsm8k-cot vs base gsm8k);
- `thought_deltas`: a Quiet-STaR arm without vs with thoughts vs corrupted thoughts.

Per seed (the drill-down into flipped items, the run report): `seed_pairs` lists the evals
that pair up, and `compare_pairs` runs lab.evaluation.compare (McNemar, flipped items) on them.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from lab.errors import LabError
from lab.evaluation import BENCHMARKS, compare
from lab.evaluation.stats import item_draw_counts, seed_pooled_delta, seed_verdict
from lab.experiments.plan import COT_TWIN
from lab.experiments.results import experiment_results, eval_items, item_prompts, item_values
from lab.store import Store

N_BOOT = 4000
BOOT_SEED = 0
POOLED_COLUMNS = ["label", "reference", "arm", "ref_arm", "benchmark", "ref_benchmark", "metric",
                  "primary", "thought_mode", "ref_thought_mode", "matched", "n_items", "n_seeds", "n_seeds_ref", "score",
                  "score_ref", "delta", "ci_low", "ci_high", "seed_sd", "per_seed", "verdict",
                  "higher_is_better", "steps", "steps_ref", "flops", "flops_ref", "eval_ids",
                  "ref_eval_ids"]
GROUP = ["arm", "thought_mode", "matched", "is_final", "benchmark", "metric"]
SAME_CHECKPOINT = "same checkpoint"


def _groups(res: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """Result rows by GROUP key, one row per seed (the latest eval when a seed was scored
    twice)."""
    if res.empty:
        return {}
    res = res.sort_values("created_at", kind="stable")
    res = res.assign(_seed=res["seed"].map(lambda s: -1 if s is None or pd.isna(s) else int(s)),
                     # a matched-steps checkpoint is one group whether or not it is also final
                     is_final=res["is_final"].astype(bool) & (res["matched"] == ""))
    res = res.drop_duplicates(GROUP + ["_seed"], keep="last")
    return {key: g.sort_values("_seed") for key, g in res.groupby(GROUP, sort=False, dropna=False)}


def comparisons(res: pd.DataFrame, against: str, reference_arm: str = "ntp",
                budget_mode: str = "flops") -> list[tuple[pd.DataFrame, pd.DataFrame, str]]:
    """(group, reference group, matched) for every comparison against `reference` or `base`."""
    if against not in ("reference", "base"):
        raise LabError(f"against must be 'reference' or 'base' (got {against!r})")
    groups = _groups(res)
    out = []
    for (arm, tm, matched, final, bench, metric), g in groups.items():
        if matched or not final:
            continue                            # references only, or manual mid-run checkpoints
        if against == "base":
            if arm == "base":
                twin = COT_TWIN.get(bench)
                ref = groups.get(("base", "none", "", True, twin, metric)) if twin else None
                if ref is not None:
                    out.append((g, ref, "base model, CoT vs direct"))
                continue
            ref = groups.get(("base", "none", "", True, bench, metric))
            if ref is not None:
                out.append((g, ref, "vs base"))
        elif arm not in ("base", reference_arm):
            ref = groups.get((reference_arm, "none", "", True, bench, metric))
            if ref is not None:
                out.append((g, ref, "FLOPs" if budget_mode == "flops" else "steps"))
            at_steps = groups.get((reference_arm, "none", arm, False, bench, metric))
            if at_steps is not None and tm == "none":
                out.append((g, at_steps, "steps"))
    return out


def thought_comparisons(res: pd.DataFrame) -> list[tuple[pd.DataFrame, pd.DataFrame, str]]:
    """Each arm evaluated with thought modes: none -> thoughts, none -> corrupted, thoughts ->
    corrupted (a delta near 0 for the last means the thoughts act as scaffolding)."""
    groups = _groups(res)
    out = []
    for (arm, tm, matched, final, bench, metric), g in groups.items():
        if tm != "none" or matched or not final:
            continue
        modes = {m: groups.get((arm, m, "", True, bench, metric)) for m in ("thoughts", "corrupted")}
        for ref, other in ((g, modes["thoughts"]), (g, modes["corrupted"]),
                           (modes["thoughts"], modes["corrupted"])):
            if ref is not None and other is not None:
                out.append((other, ref, SAME_CHECKPOINT))
    return out


def pooled(store: Store, pairs: list[tuple[pd.DataFrame, pd.DataFrame, str]]) -> pd.DataFrame:
    """seed_pooled_delta for each (group, reference group, matched): one row each. Items are
    those every eval of both groups scored; one item draw is shared by all comparisons on the
    same items (and seeds are drawn independently per group)."""
    ids = sorted({e for g, r, _ in pairs for e in [*g["eval_id"], *r["eval_id"]]})
    items = item_values(store, ids)
    by_eval = {e: g for e, g in items.groupby("eval_id")}
    draws: dict[tuple, np.ndarray] = {}
    rows = []
    for g, r, matched in pairs:
        metric, primary = g["metric"].iloc[0], bool(g["primary"].iloc[0])
        vectors = {e: _values(by_eval.get(e), metric, primary) for e in [*g["eval_id"], *r["eval_id"]]}
        common = sorted(set.intersection(*(set(v.dropna().index) for v in vectors.values())))
        if not common:
            continue
        a = np.array([vectors[e].loc[common].to_numpy(float) for e in g["eval_id"]])
        b = np.array([vectors[e].loc[common].to_numpy(float) for e in r["eval_id"]])
        key = tuple(common)
        if key not in draws:
            draws[key] = item_draw_counts(len(common), n_boot=N_BOOT, seed=BOOT_SEED)
        # The same checkpoints scored two ways (thought modes): the seeds pair up.
        paired = matched == SAME_CHECKPOINT and _seeds(g) == _seeds(r)
        s = seed_pooled_delta(a, b, arm_seeds=_seeds(g), ref_seeds=_seeds(r), paired_seeds=paired,
                              n_boot=N_BOOT, seed=BOOT_SEED, item_counts=draws[key])
        hib = bool(g["higher_is_better"].iloc[0])
        rows.append({"label": g["label"].iloc[0], "reference": r["label"].iloc[0],
                     "arm": g["arm"].iloc[0], "ref_arm": r["arm"].iloc[0],
                     "benchmark": g["benchmark"].iloc[0], "ref_benchmark": r["benchmark"].iloc[0],
                     "metric": metric, "primary": primary, "thought_mode": g["thought_mode"].iloc[0],
                     "ref_thought_mode": r["thought_mode"].iloc[0],
                     "matched": matched, "n_items": s["n_items"], "n_seeds": s["n_seeds"],
                     "n_seeds_ref": s["n_seeds_ref"], "score": s["score"], "score_ref": s["score_ref"],
                     "delta": s["delta"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                     "seed_sd": s["seed_sd"], "per_seed": s["per_seed"],
                     "verdict": seed_verdict(s["delta"], s["ci_low"], s["ci_high"], s["seed_sd"], hib),
                     "higher_is_better": hib, "steps": float(g["checkpoint_step"].mean()),
                     "steps_ref": float(r["checkpoint_step"].mean()), "flops": float(g["flops"].mean()),
                     "flops_ref": float(r["flops"].mean()), "eval_ids": list(g["eval_id"]),
                     "ref_eval_ids": list(r["eval_id"])})
    out = pd.DataFrame(rows, columns=POOLED_COLUMNS)
    order = {b: i for i, b in enumerate(BENCHMARKS)}
    out["_b"] = out["benchmark"].map(lambda b: order.get(b, len(order)))
    return (out.sort_values(["primary", "_b", "metric"], ascending=[False, True, True], kind="stable")
            .drop(columns="_b").reset_index(drop=True))


def _seeds(group: pd.DataFrame) -> list[int | None]:
    return [None if pd.isna(s) else int(s) for s in group["seed"]]


def _values(items: pd.DataFrame | None, metric: str, primary: bool) -> pd.Series:
    if items is None:
        return pd.Series(dtype=float)
    vals = items["correct"] if primary else items["metrics"].map(lambda m: (m or {}).get(metric))
    return pd.Series(pd.to_numeric(vals, errors="coerce").to_numpy(float), index=items["item_id"].astype(str))


def pooled_deltas(store: Store, experiment_id: str, against: str = "reference",
                  results: pd.DataFrame | None = None, reference_arm: str | None = None,
                  budget_mode: str | None = None) -> pd.DataFrame:
    """Seed-pooled deltas of every arm against the reference arm or the base model."""
    from lab.experiments.driver import stored_spec
    res = experiment_results(store, experiment_id) if results is None else results
    spec = stored_spec(store.data_dir, experiment_id)
    ref = reference_arm or (spec.reference_arm if spec else "ntp")
    mode = budget_mode or (spec.branch.budget_mode if spec else "flops")
    return pooled(store, comparisons(res, against, ref, mode))


def thought_deltas(store: Store, experiment_id: str, results: pd.DataFrame | None = None) -> pd.DataFrame:
    res = experiment_results(store, experiment_id) if results is None else results
    return pooled(store, thought_comparisons(res))


# ---- per seed: paired comparisons, flipped items ------------------------------------------------
DELTA_COLUMNS = ["label", "reference", "seed", "benchmark", "benchmark_ref", "eval_ref", "eval_id",
                 "n", "score_ref", "score", "delta", "stderr", "ci_low", "ci_high", "p_mcnemar",
                 "n_right_to_wrong", "n_wrong_to_right", "higher_is_better", "matched",
                 "steps_ref", "steps", "flops_ref", "flops"]


def seed_pairs(pooled_row: dict, res: pd.DataFrame) -> list[tuple[dict, dict]]:
    """The per-seed (reference, evaluated) result rows behind one pooled comparison, primary
    metric; a shared base pairs with every seed."""
    rows = {r["eval_id"]: r for r in res[res["primary"]].to_dict("records")}
    ref = [rows[e] for e in pooled_row["ref_eval_ids"] if e in rows]
    out = []
    for e in pooled_row["eval_ids"]:
        if e not in rows:
            continue
        mine = rows[e]
        match = [r for r in ref if _same_seed(r["seed"], mine["seed"])] or (ref if len(ref) == 1 else [])
        out += [(match[0], {**mine, "matched": pooled_row["matched"]})] if match else []
    return out


def _same_seed(a, b) -> bool:
    return (pd.isna(a) and pd.isna(b)) or (not pd.isna(a) and not pd.isna(b) and int(a) == int(b))


def compare_pairs(store: Store, pairs: list[tuple[dict, dict]]) -> pd.DataFrame:
    """lab.evaluation.compare on (reference, evaluated) result rows: one row each (delta =
    evaluated - reference on the items both scored, McNemar, flips). Pairs without shared
    items are left out."""
    out = []
    for ref, row in pairs:
        try:
            c = compare(store, ref["eval_id"], row["eval_id"])
        except LabError:
            continue
        out.append({"label": row["label"], "reference": ref["label"], "seed": row["seed"],
                    "benchmark": row["benchmark"], "benchmark_ref": ref["benchmark"],
                    "eval_ref": ref["eval_id"], "eval_id": row["eval_id"], "n": c["n"],
                    "score_ref": c["score_a"], "score": c["score_b"], "delta": c["delta"],
                    "stderr": c["stderr"], "ci_low": c["ci_low"], "ci_high": c["ci_high"],
                    "p_mcnemar": c["p_mcnemar"], "n_right_to_wrong": c["n_right_to_wrong"],
                    "n_wrong_to_right": c["n_wrong_to_right"], "higher_is_better": c["higher_is_better"],
                    "matched": row.get("matched", ""), "steps_ref": ref["checkpoint_step"],
                    "steps": row["checkpoint_step"], "flops_ref": ref["flops"], "flops": row["flops"]})
    return pd.DataFrame(out, columns=DELTA_COLUMNS)


def flipped_items(store: Store, eval_ref: str, eval_id: str) -> pd.DataFrame:
    """The items whose outcome changed from the reference eval to the other: direction
    ('right→wrong' / 'wrong→right'), item id, prompt, target, both predictions and outputs."""
    c = compare(store, eval_ref, eval_id)
    ids = {**{i: "right→wrong" for i in c["right_to_wrong"]}, **{i: "wrong→right" for i in c["wrong_to_right"]}}
    cols = ["direction", "item_id", "prompt", "target", "prediction_ref", "prediction",
            "output_ref", "output"]
    if not ids:
        return pd.DataFrame(columns=cols)
    items = eval_items(store, [eval_ref, eval_id], list(ids))
    prompts = item_prompts(store, eval_id, list(ids))
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


def per_seed_text(per_seed: dict[Any, float], scale: float = 1.0) -> str:
    """'s0 +0.041, s1 +0.020' (a shared base shows as 'base')."""
    return ", ".join(f"s{k} {v * scale:+.3g}" for k, v in per_seed.items())
