"""Plotly figures shared by the Benchmarks page, the Runs page and the HTML reports, so a
number looks the same everywhere. One colour per arm: an arm named after an objective gets
that objective's colour; other arms (variants) get the next free colour of EXTRA."""
from __future__ import annotations

import html
import itertools
from typing import Iterable

import pandas as pd
import plotly.graph_objects as go

from lab.evaluation import BENCHMARKS

COLORS = {"base": "#9e9e9e", "ntp": "#1f77b4", "quiet-star": "#ff7f0e", "rlp": "#2ca02c",
          "rpt": "#9467bd"}
EXTRA = ["#d62728", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939"]
PATTERNS = {"none": "", "thoughts": "/", "corrupted": "x"}
BAND = "min–max across seeds"
METRIC_UNITS = {"acc": "accuracy", "nll": "mean NLL per token (nats)",
                "answer_nll": "answer NLL (nats)", "solution_nll": "solution NLL (nats)",
                "forking_nll": "NLL on forking tokens (nats)"}


def arm_colors(arms: Iterable[str]) -> dict[str, str]:
    """A stable colour for each arm, in the order given."""
    out, extra = {}, itertools.cycle(EXTRA)
    for arm in dict.fromkeys(arms):
        out[arm] = COLORS.get(arm) or next(extra)
    return out


def _rgba(color: str, alpha: float) -> str:
    c = color.lstrip("#")
    return f"rgba({int(c[0:2], 16)},{int(c[2:4], 16)},{int(c[4:6], 16)},{alpha})"


def _order(values: Iterable[str]) -> list[str]:
    vals = list(dict.fromkeys(values))
    known = [b for b in BENCHMARKS if b in vals]
    return known + [v for v in vals if v not in known]


def seed_scores_figure(scores: pd.DataFrame, *, higher_is_better: bool = True,
                       colors: dict[str, str] | None = None, title: str = "Score per benchmark") -> go.Figure:
    """The mean over seeds of each arm (and control) per benchmark, whiskers min–max across
    seeds, and each seed's score as a dot. Accuracies as bars from 0; NLLs (lower is better,
    close together) as markers, so small differences stay visible.
    `scores`: lab.experiments.results.score_table."""
    df = scores[scores["higher_is_better"] == higher_is_better].copy()
    df["x"] = [b if p else f"{b} · {m}" for b, m, p in zip(df["benchmark"], df["metric"], df["primary"])]
    colors = colors or arm_colors(df["arm"])
    fig = go.Figure()
    for label, g in df.groupby("label", sort=False):
        arm, tm = g["arm"].iloc[0], str(g["thought_mode"].iloc[0])
        color = colors.get(arm, "#607d8b")
        pale = bool(g["matched"].iloc[0])                     # a matched-steps checkpoint
        common = dict(
            x=g["x"], y=g["mean"], name=label, legendgroup=label, offsetgroup=label,
            error_y=dict(type="data", symmetric=False, array=(g["max"] - g["mean"]).fillna(0),
                         arrayminus=(g["mean"] - g["min"]).fillna(0), visible=True),
            customdata=pd.DataFrame({"sd": g["sd"], "k": g["n_seeds"], "n": g["n"],
                                     "lo": g["min"], "hi": g["max"]}).to_numpy(),
            hovertemplate=f"<b>{html.escape(str(label))}</b><br>%{{x}}: mean %{{y:.3f}} over "
                          "%{customdata[1]} seed(s)<br>min %{customdata[3]:.3f}, max %{customdata[4]:.3f}, "
                          "sd %{customdata[0]:.3f}<br>n = %{customdata[2]} items<extra></extra>")
        if higher_is_better:       # the value printed on each bar: a bar at 0 is still seen
            fig.add_trace(go.Bar(**common, marker=dict(color=color, pattern_shape=PATTERNS.get(tm, ""),
                                                       opacity=0.5 if pale else 1.0),
                                 texttemplate="%{y:.2f}", textposition="outside", cliponaxis=False))
        else:
            fig.add_trace(go.Scatter(**common, mode="markers", marker=dict(
                color=color, size=12, opacity=0.5 if pale else 1.0,
                symbol={"thoughts": "diamond", "corrupted": "x"}.get(tm, "square"))))
        pts = g.explode(["scores", "seeds"])
        if len(pts) > len(g):                                  # several seeds: show each one
            fig.add_trace(go.Scatter(
                x=pts["x"], y=pts["scores"].astype(float), mode="markers", name=f"{label} (seeds)",
                legendgroup=label, showlegend=False, offsetgroup=label,
                marker=dict(color="#222", size=5, symbol="circle-open"),
                customdata=pts["seeds"].to_numpy(),
                hovertemplate=f"{html.escape(str(label))} seed %{{customdata}}: %{{y:.3f}}<extra></extra>"))
    if higher_is_better:
        _chance_lines(fig, df)
    fig.update_xaxes(categoryorder="array", categoryarray=_order(df["x"]))
    shape = "bars" if higher_is_better else "markers"
    unit = "accuracy" if higher_is_better else "NLL (nats, lower is better)"
    fig.update_layout(title=f"{title} ({shape}: mean over seeds; whiskers: {BAND})", barmode="group",
                      scattermode="group", height=400, yaxis_title=unit,
                      margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.15))
    if higher_is_better:
        fig.update_yaxes(rangemode="tozero")
    elif not df.empty:                                      # zoom on the values, not on 0
        lo, hi = float(df["min"].min()), float(df["max"].max())
        pad = max((hi - lo) * 0.15, 1e-3)
        fig.update_yaxes(range=[lo - pad, hi + pad])
    return fig


def _chance_lines(fig: go.Figure, df: pd.DataFrame) -> None:
    """A dashed line at each benchmark's chance score (random guessing), across its bars."""
    for x, bench in dict(zip(df["x"], df["benchmark"])).items():
        b = BENCHMARKS.get(bench)
        if b is None or b.chance is None or x != bench:      # primary scores only
            continue
        fig.add_trace(go.Scatter(x=[x], y=[b.chance], mode="markers+text", name=f"chance ({b.chance:.2f})",
                                 marker=dict(symbol="line-ew", size=120, line=dict(width=2, color="#555")),
                                 text=[f"chance {b.chance:.2f}"], textposition="top right",
                                 hovertemplate=f"{bench}: random guessing scores {b.chance:.2f}<extra></extra>"))


def pooled_deltas_figure(d: pd.DataFrame, title: str, colors: dict[str, str] | None = None) -> go.Figure:
    """Forest plot of seed-pooled deltas: each comparison's delta (accuracy in points, NLLs in
    nats) with its 95 % CI over items and seeds; hover shows the per-seed deltas."""
    d = d.copy()
    scale = d["metric"].map(lambda m: 100.0 if m == "acc" else 1.0)
    d["row"] = (d["label"] + " vs " + d["reference"] + " · " + d["benchmark"]
                + d.apply(lambda r: "" if r["primary"] else f" · {r['metric']}", axis=1)
                + d["matched"].map(lambda m: f" [{m}]"))
    colors = colors or arm_colors(d["arm"])
    fig = go.Figure()
    for unit, g in d.assign(scale=scale).groupby(d["metric"].map(lambda m: "points" if m == "acc" else "nats")):
        k = g["scale"]
        seeds = g["per_seed"].map(lambda p: ", ".join(f"s{s}: {v:+.3g}" for s, v in p.items()))
        fig.add_trace(go.Scatter(
            x=g["delta"] * k, y=g["row"], mode="markers", name=unit,
            marker=dict(size=11, color=[colors.get(a, "#607d8b") for a in g["arm"]],
                        symbol="circle" if unit == "points" else "diamond", line=dict(width=1.5, color="#333")),
            error_x=dict(type="data", symmetric=False, array=((g["ci_high"] - g["delta"]) * k).clip(lower=0),
                         arrayminus=((g["delta"] - g["ci_low"]) * k).clip(lower=0), thickness=2),
            customdata=pd.DataFrame({"lo": g["ci_low"] * k, "hi": g["ci_high"] * k, "s": seeds,
                                     "v": g["verdict"], "n": g["n_items"]}).to_numpy(),
            hovertemplate=f"<b>%{{y}}</b><br>delta %{{x:+.3f}} {unit}, 95% CI [%{{customdata[0]:+.3f}}, "
                          "%{customdata[1]:+.3f}]<br>per seed: %{customdata[2]}<br>%{customdata[3]} "
                          "(n = %{customdata[4]} items)<extra></extra>"))
    fig.add_vline(x=0, line=dict(color="#555", dash="dash"))
    fig.update_layout(title=title, height=max(220, 60 + 30 * len(d)), showlegend=len(set(scale)) > 1,
                      xaxis_title="delta (arm − reference): accuracy in points, NLL in nats; 95 % CI "
                                  "over items and seeds", margin=dict(l=10, r=10, t=50, b=10))
    fig.update_yaxes(autorange="reversed")
    return fig


def deltas_figure(d: pd.DataFrame, title: str = "Paired deltas") -> go.Figure:
    """Forest plot of single paired comparisons (lab.evaluation.compare): delta with its 95 %
    paired bootstrap CI; hover shows McNemar p and how many items flipped each way."""
    d = d.copy()
    d["row"] = d["label"] + " · " + d["benchmark"] + (" vs " + d["reference"])
    fig = go.Figure()
    for bench, g in d.groupby("benchmark", sort=True):
        p = g["p_mcnemar"].map(lambda v: "–" if v is None or pd.isna(v) else f"{v:.3g}")
        fig.add_trace(go.Scatter(
            x=g["delta"], y=g["row"], mode="markers", name=bench,
            marker=dict(size=11, line=dict(width=1.5, color="#333")),
            error_x=dict(type="data", symmetric=False, array=(g["ci_high"] - g["delta"]).clip(lower=0),
                         arrayminus=(g["delta"] - g["ci_low"]).clip(lower=0), thickness=2),
            customdata=pd.DataFrame({"lo": g["ci_low"], "hi": g["ci_high"], "p": p, "n": g["n"],
                                     "rw": g["n_right_to_wrong"], "wr": g["n_wrong_to_right"]}).to_numpy(),
            hovertemplate="<b>%{y}</b><br>delta %{x:+.3f}  95% CI [%{customdata[0]:+.3f}, "
                          "%{customdata[1]:+.3f}]<br>McNemar p = %{customdata[2]}  (n = %{customdata[3]})"
                          "<br>right→wrong %{customdata[4]}, wrong→right %{customdata[5]}<extra></extra>"))
    fig.add_vline(x=0, line=dict(color="#555", dash="dash"))
    fig.update_layout(title=title, height=max(220, 60 + 34 * len(d)), showlegend=False,
                      xaxis_title="delta (evaluated − reference), 95 % CI",
                      margin=dict(l=10, r=10, t=50, b=10))
    fig.update_yaxes(autorange="reversed")
    return fig


X_TITLES = {"step": "optimizer step", "flops": "training FLOPs", "wall_time": "wall time (s)"}


def curves_figure(metrics: pd.DataFrame, metric: str, labels: dict[str, str], *, x: str = "step",
                  title: str | None = None, smoothing: float = 0.0, markers: bool = True,
                  colors: dict[str, str] | None = None) -> go.Figure:
    """One metric of several runs against steps, wall time or training FLOPs. smoothing in
    [0, 1): exponential moving average weight. `colors`: by label (default: arm_colors of the
    labels, so a label that is an objective's name gets its colour)."""
    colors = colors or arm_colors(labels.values())
    fig = go.Figure()
    for run_id, g in metrics[metrics["name"] == metric].groupby("run_id"):
        g = g.sort_values("step")
        label = labels.get(run_id, run_id)
        y = g["value"].ewm(alpha=1 - smoothing).mean() if smoothing > 0 else g["value"]
        color = colors.get(label, "#607d8b")
        fig.add_trace(go.Scatter(x=g[x], y=y, mode="lines+markers" if markers else "lines", name=label,
                                 line=dict(color=color)))
    fig.update_layout(title=title or metric, height=300, margin=dict(l=10, r=10, t=50, b=10),
                      xaxis_title=X_TITLES.get(x, x), legend=dict(orientation="h", y=-0.3))
    if x == "flops":
        fig.update_xaxes(rangemode="tozero")
    return fig


def band_curves_figure(metrics: pd.DataFrame, metric: str, run_arm: dict[str, str],
                       titles: dict[str, str], *, x: str = "step", title: str | None = None,
                       colors: dict[str, str] | None = None) -> go.Figure:
    """One metric per arm: the mean over its seeds' runs at each step (line) and the min–max
    across seeds (band). With x = flops the x of a step is the seeds' mean FLOPs there."""
    df = metrics[(metrics["name"] == metric) & metrics["run_id"].isin(list(run_arm))].copy()
    df["arm"] = df["run_id"].map(run_arm)
    colors = colors or arm_colors(run_arm.values())
    fig = go.Figure()
    for arm, g in df.groupby("arm", sort=False):
        agg = g.groupby("step").agg(mean=("value", "mean"), lo=("value", "min"), hi=("value", "max"),
                                    k=("run_id", "nunique"),
                                    **({"x": (x, "mean")} if x != "step" else {})).reset_index()
        agg = agg.assign(x=agg["step"]) if x == "step" else agg
        agg = agg.sort_values("x")
        color = colors.get(arm, "#607d8b")
        name = titles.get(arm, arm)
        if int(agg["k"].max()) > 1:
            fig.add_trace(go.Scatter(x=pd.concat([agg["x"], agg["x"][::-1]]),
                                     y=pd.concat([agg["hi"], agg["lo"][::-1]]), fill="toself",
                                     fillcolor=_rgba(color, 0.18), line=dict(width=0), hoverinfo="skip",
                                     name=f"{name} ({BAND})", legendgroup=arm, showlegend=False))
        fig.add_trace(go.Scatter(x=agg["x"], y=agg["mean"], mode="lines", name=name, legendgroup=arm,
                                 line=dict(color=color),
                                 customdata=agg[["lo", "hi", "k"]].to_numpy(),
                                 hovertemplate=f"<b>{html.escape(name)}</b> %{{x}}: mean %{{y:.4g}} "
                                               "(min %{customdata[0]:.4g}, max %{customdata[1]:.4g}, "
                                               "%{customdata[2]} seeds)<extra></extra>"))
    fig.update_layout(title=(title or metric) + f" (line: mean over seeds; band: {BAND})", height=320,
                      margin=dict(l=10, r=10, t=50, b=10), xaxis_title=X_TITLES.get(x, x),
                      legend=dict(orientation="h", y=-0.3))
    if x == "flops":
        fig.update_xaxes(rangemode="tozero")
    return fig
