"""One plain-language sentence under each experiment chart (Benchmarks page and HTML report):
what the chart says, computed from the same tables the chart draws. The summary at the top
(summary.py) answers the question; these help a reader who looks at one chart.

Same wording rules as summary.py: a difference is named only when its 95 % CI excludes 0.
"""
from __future__ import annotations

import math

import pandas as pd

from lab.evaluation.benchmarks import BENCHMARKS
from lab.experiments.summary import METRIC_WORDS

PREFIX = "Takeaway: "


def _metric(benchmark: str, metric: str) -> str:
    return f"{METRIC_WORDS.get(metric, metric)} ({benchmark})"


def _overlap(rows: pd.DataFrame) -> bool:
    """True when the best and the runner-up arm's seed ranges (min–max) overlap."""
    if len(rows) < 2:
        return True
    a, b = rows.iloc[0], rows.iloc[1]
    return not (a["min"] > b["max"] or b["min"] > a["max"])


def scores(scores: pd.DataFrame, higher_is_better: bool) -> str:
    """The score chart of one direction (accuracy bars, or NLL markers): per benchmark, the
    best arm, whether the seeds separate it from the next, and where chance is."""
    df = scores[(scores["higher_is_better"] == higher_is_better) & (scores["matched"] == "")]
    if df.empty:
        return ""
    parts = []
    for (bench, metric), g in df.groupby(["benchmark", "metric"], sort=False):
        g = g.sort_values("mean", ascending=not higher_is_better)
        best = g.iloc[0]
        if higher_is_better and float(g["mean"].max()) == 0.0:
            parts.append(f"{_metric(bench, metric)}: every arm scores 0, so this benchmark is too hard "
                         "for this model to tell the arms apart")
            continue
        text = f"{_metric(bench, metric)}: best {best['label']} ({best['mean']:.3f})"
        if len(g) > 1:
            text += (", its seeds overlap the next arm's" if _overlap(g)
                     else f", clear of the next ({g.iloc[1]['label']}, {g.iloc[1]['mean']:.3f}) on every seed")
        chance = BENCHMARKS[bench].chance if bench in BENCHMARKS and bool(best["primary"]) else None
        if chance is not None and higher_is_better:
            above = int((g["mean"] > chance).sum())
            text += (f"; {above} of {len(g)} above chance ({chance:.2f})" if above
                     else f"; none above chance ({chance:.2f}): nothing was learned that this benchmark sees")
        parts.append(text)
    return PREFIX + "; ".join(parts) + ". Read the deltas below for whether a gap is real."


def deltas(d: pd.DataFrame) -> str:
    """A forest plot of seed-pooled deltas: how many comparisons are clearly better, clearly
    worse, or unclear, and the largest clear one."""
    if d.empty:
        return ""
    verdicts = d["verdict"].astype(str)
    better = d[verdicts.str.startswith("better")]
    worse = d[verdicts.str.startswith("worse")]
    unclear = len(d) - len(better) - len(worse)
    counts = []
    if len(better):
        counts.append(f"{len(better)} clearly better")
    if len(worse):
        counts.append(f"{len(worse)} clearly worse")
    if unclear:
        counts.append(f"{unclear} with no clear difference (the interval crosses 0)")
    text = f"{PREFIX}of {len(d)} comparison{'s' * (len(d) != 1)}, " + ", ".join(counts)
    clear = pd.concat([better, worse])
    if not clear.empty:
        big = clear.loc[clear["delta"].abs().idxmax()]
        k, unit = (100.0, "points") if big["metric"] == "acc" else (1.0, "nats")
        text += (f". The largest clear one: {big['label']} vs {big['reference']} on "
                 f"{_metric(big['benchmark'], big['metric'])}, {big['delta'] * k:+.3g} {unit}")
    elif unclear:
        text += ": at this size the arms cannot be told apart"
    return text + "."


def curve(metrics: pd.DataFrame, metric: str, run_arm: dict[str, str], titles: dict[str, str],
          what: str) -> str:
    """A training curve (mean over seeds): where each arm started and ended. Losses of different
    objectives measure different things, so the sentence does not rank them."""
    df = metrics[(metrics["name"] == metric) & metrics["run_id"].isin(list(run_arm))]
    if df.empty:
        return ""
    df = df.assign(arm=df["run_id"].map(run_arm))
    parts = []
    for arm, g in df.groupby("arm", sort=False):
        by_step = g.groupby("step")["value"].mean().dropna()
        if by_step.empty or not all(math.isfinite(v) for v in (by_step.iloc[0], by_step.iloc[-1])):
            continue
        first, last = float(by_step.iloc[0]), float(by_step.iloc[-1])
        parts.append(f"{titles.get(arm, arm)} {first:.3g} at its only logged step" if len(by_step) == 1
                     else f"{titles.get(arm, arm)} {first:.3g} → {last:.3g} over {len(by_step)} logged steps")
    if not parts:
        return ""
    note = (" Each objective's loss measures something different: compare an arm with itself over "
            "time, and the arms with each other on the benchmarks." if metric == "loss" else "")
    return f"{PREFIX}{what}, first → last (mean over seeds): " + "; ".join(parts) + "." + note
