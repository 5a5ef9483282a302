"""Self-contained HTML reports of a run or an experiment, for readers who will not open the
lab: what was trained, how training went, what the benchmarks say (with confidence
intervals), and what the model thought. Plotly's JavaScript is inlined once per document,
so a report opens offline. The figure builders are shared with the Benchmarks page.

    html = experiment_report_html(store, "exp-...")
    html = run_report_html(store, "20250101-120000-ab12")
"""
from __future__ import annotations

import html
import json
from datetime import datetime
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from lab import experiments as ex
from lab.errors import LabError
from lab.evaluation import BENCHMARKS
from lab.progress import Callback, Progress
from lab.store import Store

# One colour per objective, so a method looks the same in every chart.
COLORS = {"base": "#9e9e9e", "ntp": "#1f77b4", "quiet-star": "#ff7f0e", "rlp": "#2ca02c",
          "rpt": "#9467bd"}
PATTERNS = {"none": "", "thoughts": "/", "corrupted": "x"}
ORDER = ["base", "ntp", "quiet-star", "rlp", "rpt"]
CURVES = [("loss", "Training loss"), ("reward/mean", "Mean thought reward"),
          ("entropy/mean", "Mean next-token entropy (nats)"), ("loss/mixed_nll", "NLL with thoughts")]
EXPLAIN = {
    "ntp": "Plain next-token prediction: the baseline every reasoning objective is compared with.",
    "quiet-star": "Quiet-STaR: the model writes a short hidden thought after every token; a mixing "
                  "head learns how much the thought should change the next-token prediction, and "
                  "thoughts that make the true continuation likelier are reinforced.",
    "rlp": "RLP: the model samples a few thoughts before predicting one next token and is "
           "rewarded by how much the thought raised the probability of the true token, "
           "compared with a slowly moving copy of itself.",
    "rpt": "RPT: at hard positions the model reasons step by step and writes its guess of the "
           "next token in a box; a guess that matches the real text is rewarded.",
}


# ---- figures (also used by pages/benchmarks.py) ------------------------------------------------
def _label_key(label: str) -> tuple:
    base = label.split(" ")[0].split("@")[0]
    return (ORDER.index(base) if base in ORDER else len(ORDER), label)


def color_of(label: str) -> str:
    return COLORS.get(label.split(" ")[0].split("@")[0], "#607d8b")


def scores_figure(results: pd.DataFrame, *, higher_is_better: bool = True,
                  title: str = "Score per benchmark") -> go.Figure:
    """Grouped bars: one group per benchmark, one bar per model/objective, ± 1 stderr."""
    df = results[results["higher_is_better"] == higher_is_better]
    fig = go.Figure()
    for label in sorted(df["label"].unique(), key=_label_key):
        g = df[df["label"] == label]
        tm = str(g["thought_mode"].iloc[0])
        fig.add_trace(go.Bar(
            x=g["benchmark"], y=g["score"], name=label,
            error_y=dict(type="data", array=g["stderr"].fillna(0), visible=True),
            text=g["score"].map(lambda v: f"{v:.2f}"), textposition="inside", insidetextanchor="start",
            # An intermediate checkpoint (run:ID@STEP, e.g. NTP at matched steps) is paler.
            marker=dict(color=color_of(label), pattern_shape=PATTERNS.get(tm, ""),
                        opacity=0.5 if "@" in label else 1.0),
            customdata=g[["n", "stderr", "eval_id"]].to_numpy(),
            hovertemplate=f"<b>{html.escape(label)}</b><br>%{{x}}: %{{y:.3f}} ± %{{customdata[1]:.3f}}"
                          "<br>n = %{customdata[0]} items<br>eval %{customdata[2]}<extra></extra>"))
    order = [b for b in BENCHMARKS if b in set(df["benchmark"])]
    fig.update_xaxes(categoryorder="array", categoryarray=order)
    unit = "accuracy" if higher_is_better else "mean NLL per token (nats, lower is better)"
    fig.update_layout(title=title, barmode="group", height=380, yaxis_title=unit,
                      margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.15))
    if higher_is_better:
        fig.update_yaxes(rangemode="tozero")
    return fig


def deltas_figure(d: pd.DataFrame, title: str = "Paired deltas") -> go.Figure:
    """Forest plot: each comparison's delta with its 95 % paired bootstrap CI; hover shows
    McNemar p and how many items flipped each way."""
    d = d.copy()
    d["row"] = d["label"] + " · " + d["benchmark"] + (" vs " + d["reference"])
    fig = go.Figure()
    for bench, g in d.groupby("benchmark", sort=True):
        p = g["p_mcnemar"].map(lambda v: "–" if v is None or pd.isna(v) else f"{v:.3g}")
        fig.add_trace(go.Scatter(
            x=g["delta"], y=g["row"], mode="markers", name=bench,
            marker=dict(size=11, color=[color_of(lbl) for lbl in g["label"]],
                        line=dict(width=1.5, color="#333")),
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


def curves_figure(metrics: pd.DataFrame, metric: str, labels: dict[str, str], *, x: str = "step",
                  title: str | None = None, smoothing: float = 0.0, markers: bool = True) -> go.Figure:
    """One metric of several runs against steps, wall time or training FLOPs (shared by the
    reports and the Runs page). smoothing in [0, 1): exponential moving average weight."""
    fig = go.Figure()
    for run_id, g in metrics[metrics["name"] == metric].groupby("run_id"):
        g = g.sort_values("step")
        label = labels.get(run_id, run_id)
        y = g["value"].ewm(alpha=1 - smoothing).mean() if smoothing > 0 else g["value"]
        fig.add_trace(go.Scatter(x=g[x], y=y, mode="lines+markers" if markers else "lines", name=label,
                                 line=dict(color=color_of(label))))
    fig.update_layout(title=title or metric, height=300, margin=dict(l=10, r=10, t=50, b=10),
                      xaxis_title={"step": "optimizer step", "flops": "training FLOPs",
                                   "wall_time": "wall time (s)"}.get(x, x),
                      legend=dict(orientation="h", y=-0.3))
    if x == "flops":
        fig.update_xaxes(rangemode="tozero")
    return fig


def verdict(row: dict) -> str:
    """Plain-language reading of a delta: a difference only when the CI excludes 0."""
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return "–"
    better = lo > 0 if row.get("higher_is_better", True) else hi < 0
    worse = hi < 0 if row.get("higher_is_better", True) else lo > 0
    return "better" if better else "worse" if worse else "no clear difference"


def delta_table(d: pd.DataFrame) -> pd.DataFrame:
    """The deltas in the columns a reader needs, with a verdict."""
    out = d[["label", "reference", "benchmark", "n", "score_ref", "score", "delta", "ci_low",
             "ci_high", "p_mcnemar", "n_right_to_wrong", "n_wrong_to_right", "matched"]].copy()
    out.insert(out.columns.get_loc("p_mcnemar") + 1, "verdict",
               [verdict(r) for r in d.to_dict("records")])
    return out.rename(columns={"score_ref": "ref score", "n_right_to_wrong": "right→wrong",
                               "n_wrong_to_right": "wrong→right", "p_mcnemar": "McNemar p",
                               "ci_low": "CI low", "ci_high": "CI high"})


def top_thoughts(store: Store, run_id: str, k: int = 5, context_tokens: int = 40) -> pd.DataFrame:
    """The k best-rewarded thoughts (one per position), each with the text before it and the
    true next token."""
    th = store.query("SELECT step, sample, position, kind, text, reward, weight, base_nll, mixed_nll, "
                     "prediction, target FROM thoughts WHERE run_id = ? AND reward IS NOT NULL "
                     "ORDER BY reward DESC, step DESC LIMIT ?", [run_id, k * 20])
    th = th.drop_duplicates(["step", "sample", "position"]).head(k)
    contexts = []
    for r in th.to_dict("records"):
        toks = store.query("SELECT token FROM tokens WHERE run_id = ? AND step = ? AND sample = ? "
                           "AND position < ? AND position >= ? ORDER BY position",
                           [run_id, r["step"], r["sample"], r["position"], r["position"] - context_tokens])
        contexts.append("".join(toks["token"].astype(str)))
    th.insert(3, "context", contexts)
    return th


# ---- HTML pieces -------------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.5}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #eee;padding-bottom:.2em;margin-top:2em}
.sub{color:#666;margin-top:0} .note{background:#f6f8fa;border-left:4px solid #1f77b4;padding:.6em 1em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1em} th,td{border:1px solid #ddd;
padding:4px 8px;text-align:left;vertical-align:top} th{background:#fafafa}
.thought{border:1px solid #e3e3e3;border-radius:6px;padding:.6em 1em;margin:.6em 0}
.ctx{font-family:ui-monospace,monospace;white-space:pre-wrap;color:#555}
.th{font-family:ui-monospace,monospace;white-space:pre-wrap;background:#fff3e0;padding:0 3px}
.tg{font-family:ui-monospace,monospace;background:#e8f5e9;padding:0 3px;font-weight:600;white-space:pre}
"""


class _Doc:
    """Accumulates sections; the first figure brings nothing extra: plotly.js is in <head>.
    Each section heading advances the progress (`sections` is the expected count)."""

    def __init__(self, title: str, subtitle: str, sections: int,
                 progress: Callback | None = None, stream=None) -> None:
        self.title, self.parts = title, [f"<h1>{_e(title)}</h1><p class='sub'>{_e(subtitle)}</p>"]
        self.progress = (Progress("Building the report", sections, progress, stream)
                         if progress or stream else None)
        if self.progress:
            self.progress.update(0)

    def h2(self, text: str) -> None:
        if self.progress:
            self.progress.advance(note=text)
        self.parts.append(f"<h2>{_e(text)}</h2>")

    def p(self, text: str, cls: str = "") -> None:
        self.parts.append(f"<p{f' class={cls!r}' if cls else ''}>{_e(text)}</p>")

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def fig(self, fig: go.Figure) -> None:
        fig.update_layout(template="plotly_white")
        self.parts.append(fig.to_html(full_html=False, include_plotlyjs=False,
                                      config={"displaylogo": False, "responsive": True}))

    def table(self, df: pd.DataFrame) -> None:
        if df.empty:
            self.p("(nothing yet)")
            return
        self.parts.append(_fmt(df).to_html(index=False, escape=True, border=0, na_rep="–"))

    def html(self) -> str:
        from plotly.offline import get_plotlyjs
        if self.progress:
            self.progress.done()
        return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                f"<title>{_e(self.title)}</title><style>{CSS}</style>"
                f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
                + "\n".join(self.parts) + f"<hr><p class='sub'>Generated by ThoughtLab on "
                f"{datetime.now():%Y-%m-%d %H:%M}.</p></body></html>")


def _e(text: Any) -> str:
    return html.escape(str(text))


def _fmt(df: pd.DataFrame) -> pd.DataFrame:
    """Numbers as a reader wants them: 3 decimals, FLOPs in scientific notation."""
    out = df.copy()
    for c in out.columns:
        if not pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].map(lambda v: "–" if v is None or v is pd.NA else v)
            continue
        if "flops" in c or c.startswith("p_"):
            out[c] = out[c].map(lambda v: "–" if pd.isna(v) else f"{v:.3g}")
        else:
            out[c] = out[c].map(lambda v: "–" if pd.isna(v) else f"{v:.3f}")
    return out


def _thoughts_html(th: pd.DataFrame) -> str:
    if th.empty:
        return "<p>(no thoughts were logged)</p>"
    cards = []
    for r in th.to_dict("records"):
        nll = ""
        if pd.notna(r.get("base_nll")) and pd.notna(r.get("mixed_nll")):
            nll = f" · NLL of the true token {r['base_nll']:.2f} without → {r['mixed_nll']:.2f} with the thought"
        guess = (f" · the model predicted <span class='tg'>{_e(r['prediction'])}</span>"
                 if isinstance(r.get("prediction"), str) and r["prediction"] else "")
        cards.append(
            f"<div class='thought'><div class='ctx'>…{_e(r['context'])}</div>"
            f"<div>thought: <span class='th'>{_e(r['text'])}</span></div>"
            f"<div>true next token: <span class='tg'>{_e(r['target'])}</span>{guess}</div>"
            f"<div class='sub'>step {r['step']} · reward {r['reward']:.3g}{nll}</div></div>")
    return "\n".join(cards)


def _curves(doc: _Doc, store: Store, run_ids: list[str], labels: dict[str, str], x: str) -> None:
    df = store.metrics(run_ids, [m for m, _ in CURVES])
    shown = [(m, t) for m, t in CURVES if (df["name"] == m).any()]
    if not shown:
        doc.p("(no training metrics logged)")
    for metric, title in shown:
        doc.fig(curves_figure(df, metric, labels, x=x, title=title))


READING = ("How to read a delta: it is the evaluated model's score minus the reference's on the "
           "same benchmark items. The interval is a 95 % paired bootstrap confidence interval; "
           "when it contains 0 the data cannot tell the two apart. McNemar's p tests the items "
           "that flipped (right→wrong vs wrong→right); small p (< 0.05) means the flips are "
           "unlikely to be chance.")


def _deltas_section(doc: _Doc, d: pd.DataFrame, title: str, what: str) -> None:
    doc.h2(title)
    doc.p(what)
    if d.empty:
        doc.p("(no paired comparison available yet)")
        return
    doc.fig(deltas_figure(d, title))
    doc.table(delta_table(d))


# ---- reports -----------------------------------------------------------------------------------
def run_report_html(store: Store, run_id: str, progress: Callback | None = None,
                    stream=None) -> str:
    """A training run: config, curves (loss / reward / entropy), its benchmark scores and
    deltas with CIs, and its best-rewarded thoughts with context and target. `progress`
    gets (fraction, message with ETA) per section; `stream` shows a bar (the CLI)."""
    run = store.require_run(run_id)
    cfg = json.loads(run.get("config") or "{}")
    obj = run.get("objective") or ""
    comp = store.query("SELECT max(step) AS steps, max(flops) AS flops, max(wall_time) AS wall "
                       "FROM metrics WHERE run_id = ?", [run_id]).iloc[0]
    doc = _Doc(f"ThoughtLab run report: {run.get('name') or run_id}",
               f"run {run_id} · objective {obj} · model {run.get('model')} · corpus "
               f"{run.get('corpus')} · {run.get('status')}", 7, progress, stream)
    doc.h2("What this run did")
    doc.p(EXPLAIN.get(obj, obj))
    steps = int(comp["steps"]) if pd.notna(comp["steps"]) else 0
    flops = float(comp["flops"]) if pd.notna(comp["flops"]) else 0.0
    wall = float(comp["wall"]) if pd.notna(comp["wall"]) else 0.0
    budget = float(cfg.get("max_flops") or 0)
    doc.p(f"{steps} optimizer steps, {flops:.3g} training FLOPs"
          + (f" (budget {budget:.3g})" if budget else "") + f", {wall:.0f} s of training"
          + (f"; part of experiment {run['experiment']}" if run.get("experiment") else "") + ".")
    doc.h2("Training curves")
    _curves(doc, store, [run_id], {run_id: obj}, "step")

    doc.h2("Benchmarks")
    res = ex.results_for_evals(store, store.query("SELECT id FROM evals WHERE run_id = ?",
                                                  [run_id])["id"].tolist())
    if res.empty:
        doc.p("This run has not been evaluated yet.")
    else:
        doc.table(res[["benchmark", "mode", "thought_mode", "score", "stderr", "n", "steps", "flops"]])
        if run.get("experiment"):
            exp_res = ex.experiment_results(store, run["experiment"])
            for against in ("base", "ntp"):
                d = ex.deltas(store, run["experiment"], against, exp_res)
                d = d[d["eval_id"].isin(res["eval_id"])]
                if not d.empty:
                    _deltas_section(doc, d, f"Compared with {'the base model' if against == 'base' else 'NTP'}",
                                    READING)
    doc.h2("Example thoughts")
    doc.p("The best-rewarded thoughts the run logged: the text the model had read, what it "
          "thought, and the token that really came next.")
    doc.raw(_thoughts_html(top_thoughts(store, run_id)))
    doc.h2("Configuration")
    doc.table(pd.DataFrame({"setting": list(cfg), "value": [json.dumps(v) if isinstance(v, (dict, list))
                                                            else str(v) for v in cfg.values()]}))
    doc.p(f"Command: {run.get('command') or '–'} · git {run.get('git_commit')} · {run.get('versions')}",
          "sub")
    return doc.html()


def experiment_report_html(store: Store, experiment_id: str, progress: Callback | None = None,
                           stream=None) -> str:
    """An experiment: what was compared at which budget, the compute each run used, scores,
    deltas vs NTP and vs the base model (CIs, McNemar), the §5 controls, training curves
    and example thoughts of each reasoning objective. `progress`/`stream` as in
    run_report_html."""
    jobs = ex.experiment_runs(store, experiment_id)
    if jobs.empty:
        raise LabError(f"No experiment {experiment_id!r} in {store.path}.")
    compute = ex.compute_table(store, experiment_id)
    res = ex.experiment_results(store, experiment_id)
    train = jobs[jobs["kind"] == "train"]
    model = train["model"].iloc[0] if not train.empty else "?"
    doc = _Doc(f"ThoughtLab experiment report: {experiment_id}",
               f"model {model} · objectives {', '.join(train['objective'])} · "
               f"{len(jobs[jobs['status'] == 'finished'])} of {len(jobs)} jobs finished",
               8 + int((train["objective"] != "ntp").sum()), progress, stream)
    doc.h2("The question")
    doc.p("Does reasoning at the level of single tokens during pretraining (Quiet-STaR, RLP, RPT) "
          "make a model reason better than plain next-token prediction (NTP) given the same "
          "training compute? Every objective below started from the same model, read the same "
          "corpus, and was evaluated on the same benchmark items with the same prompts.")
    for obj in train["objective"].unique():
        doc.p(EXPLAIN.get(obj, obj))

    doc.h2("Compute: what was matched")
    budgets = compute["budget_flops"][compute["budget_flops"] > 0]
    if not budgets.empty:
        doc.p(f"Every run had the same training budget of {budgets.iloc[0]:.3g} FLOPs (forward + "
              "backward, thought sampling included) and stopped once it was spent: a costlier "
              "objective therefore takes fewer steps, and each run may overshoot by its last step. "
              "Labels ntp@STEP are NTP's checkpoint at another objective's step count, for the "
              "comparison at matched steps.",
              "note")
    else:
        doc.p("Every run did the same number of optimizer steps; their FLOPs differ (below).", "note")
    doc.table(compute[["objective", "status", "steps", "flops", "budget_flops", "budget_share",
                       "flops_per_step"]])

    doc.h2("Scores")
    if res.empty:
        doc.p("No evaluation has finished yet.")
    else:
        n_min = int(res["n"].min())
        if n_min < 100:
            n_max = int(res["n"].max())
            doc.p(f"Only {n_min if n_min == n_max else f'{n_min}–{n_max}'} items per benchmark: "
                  "confidence intervals are "
                  "wide, so read this as a smoke test unless the differences are large.", "note")
        for hib in (True, False):
            if (res["higher_is_better"] == hib).any():
                doc.fig(scores_figure(res, higher_is_better=hib))
        doc.table(res.sort_values(["benchmark", "label"])[["label", "benchmark", "mode", "score",
                                                           "stderr", "n", "steps", "flops"]])
    _deltas_section(doc, ex.deltas(store, experiment_id, "ntp", res), "Reasoning objectives vs NTP",
                    "The central comparison: each objective's checkpoint minus the NTP checkpoint "
                    "trained with the same FLOP budget (matched: FLOPs) and, where it was evaluated, "
                    "NTP's checkpoint at the objective's own step count (matched: steps, reference "
                    "ntp@STEP). " + READING)
    _deltas_section(doc, ex.deltas(store, experiment_id, "base", res), "Every checkpoint vs the base model",
                    "What training changed at all. The row 'base · gsm8k-cot vs base' is the "
                    "latent-reasoning control: the untrained model prompted to think step by step.")
    _deltas_section(doc, ex.thought_deltas(store, experiment_id, res), "Are Quiet-STaR's thoughts used?",
                    "The Quiet-STaR checkpoint evaluated without thoughts, with its own thoughts, and "
                    "with thoughts replaced by random tokens of the same length. If corrupted thoughts "
                    "score like real ones, the thoughts act as scaffolding, not as reasoning.")
    if not train.empty:
        doc.h2("Training curves")
        doc.p("Against training FLOPs, so the curves line up at equal compute.")
        _curves(doc, store, train["id"].tolist(), dict(zip(train["id"], train["objective"])), "flops")
    for r in train[train["objective"] != "ntp"].to_dict("records"):
        doc.h2(f"Example thoughts: {r['objective']}")
        doc.raw(_thoughts_html(top_thoughts(store, r["id"], k=3)))
    doc.h2("Jobs")
    doc.table(jobs[["id", "kind", "name", "status", "step", "max_steps", "error"]])
    return doc.html()


def report_file_name(kind: str, ident: str) -> str:
    return f"thoughtlab-{kind}-{''.join(c if c.isalnum() or c in '-_' else '_' for c in ident)}.html"

