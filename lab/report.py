"""Self-contained HTML reports of a run or an experiment, for readers who will not open the
lab: what was trained, how training went, what the benchmarks say (with confidence
intervals over items and seeds), and what the model thought. Plotly's JavaScript is inlined
once per document, so a report opens offline. Figures come from lab.figures (shared with the
pages); the tables' reading helpers below are shared with the Benchmarks page.

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
from lab.experiments import results, takeaways
from lab.experiments.compare import compare_pairs, seed_pairs
from lab.experiments.summary import experiment_summary
from lab.figures import (BAND, arm_colors, band_curves_figure, curves_figure, deltas_figure,  # noqa: F401
                         pooled_deltas_figure, seed_scores_figure)
from lab.progress import Callback, Progress
from lab.queries import run_totals
from lab.store import Store

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


def verdict(row: dict) -> str:
    """Plain-language reading of a single paired delta: a difference only when the CI
    excludes 0."""
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return "–"
    better = lo > 0 if row.get("higher_is_better", True) else hi < 0
    worse = hi < 0 if row.get("higher_is_better", True) else lo > 0
    return "better" if better else "worse" if worse else "no clear difference"


def delta_table(d: pd.DataFrame) -> pd.DataFrame:
    """Single paired deltas (one seed, lab.evaluation.compare) in the columns a reader needs."""
    out = d[["label", "reference", "benchmark", "n", "score_ref", "score", "delta", "ci_low",
             "ci_high", "p_mcnemar", "n_right_to_wrong", "n_wrong_to_right", "matched"]].copy()
    out.insert(out.columns.get_loc("p_mcnemar") + 1, "verdict",
               [verdict(r) for r in d.to_dict("records")])
    return out.rename(columns={"score_ref": "ref score", "n_right_to_wrong": "right→wrong",
                               "n_wrong_to_right": "wrong→right", "p_mcnemar": "McNemar p",
                               "ci_low": "CI low", "ci_high": "CI high"})


def pooled_table(d: pd.DataFrame) -> pd.DataFrame:
    """Seed-pooled deltas for reading: accuracy in points, NLLs in nats, per-seed deltas and
    their spread, and the verdict."""
    k = d["metric"].map(lambda m: 100.0 if m == "acc" else 1.0)
    return pd.DataFrame({
        "arm": d["label"], "vs": d["reference"], "benchmark": d["benchmark"], "metric": d["metric"],
        "matched": d["matched"], "unit": d["metric"].map(lambda m: "points" if m == "acc" else "nats"),
        "delta": d["delta"] * k, "CI low": d["ci_low"] * k, "CI high": d["ci_high"] * k,
        "seed sd": d["seed_sd"] * k,
        "per seed": [", ".join(f"s{s}: {v * f:+.3g}" for s, v in p.items()) for p, f in zip(d["per_seed"], k)],
        "seeds": d["n_seeds"], "items": d["n_items"], "verdict": d["verdict"]})


def score_display(scores: pd.DataFrame) -> pd.DataFrame:
    """Scores across seeds for reading: mean, sd, min, max and each seed's score."""
    return pd.DataFrame({
        "result": scores["label"], "benchmark": scores["benchmark"], "metric": scores["metric"],
        "mean": scores["mean"], "sd": scores["sd"], "min": scores["min"], "max": scores["max"],
        "per seed": [", ".join(f"s{s}: {v:.3f}" if s is not None else f"{v:.3f}" for s, v in zip(ss, vv))
                     for ss, vv in zip(scores["seeds"], scores["scores"])],
        "seeds": scores["n_seeds"], "items": scores["n"], "steps": scores["steps"]})


def top_thoughts(store: Store, run_id: str, k: int = 5, context_tokens: int = 40) -> pd.DataFrame:
    """The k best-rewarded thoughts (one per position), each with the text before it and the
    true next token."""
    return results.top_thought_rows(store, run_id, k, context_tokens)


# ---- HTML pieces -------------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.5}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #eee;padding-bottom:.2em;margin-top:2em}
.sub{color:#666;margin-top:0} .takeaway{font-style:italic;color:#333} .note{background:#f6f8fa;border-left:4px solid #1f77b4;padding:.6em 1em}
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


READING = ("How to read a delta: the arm's score minus the reference's on the same benchmark "
           "items, pooled over seeds (mean over seeds of each side). The interval is a 95 % "
           "bootstrap interval that resamples the items and, independently for each side, the "
           "seeds; when it contains 0 the data cannot tell the two apart. 'Per seed' lists the "
           "delta of each seed against the same seed of the reference; their standard deviation "
           "is the seed-to-seed spread, and an effect is called larger than that spread only "
           "when its interval excludes 0 and it exceeds the spread. Accuracy in points, NLLs in "
           "nats (lower is better).")


def _pooled_section(doc: _Doc, d: pd.DataFrame, title: str, what: str, colors: dict[str, str]) -> None:
    doc.h2(title)
    doc.p(what)
    if d.empty:
        doc.p("(no comparison available yet)")
        return
    for primary, what in ((True, ""), (False, " — sensitive metrics (NLL, lower is better)")):
        if (d["primary"] == primary).any():
            doc.fig(pooled_deltas_figure(d[d["primary"] == primary], title + what, colors))
            doc.p(takeaways.deltas(d[d["primary"] == primary]), "takeaway")
    doc.table(pooled_table(d))


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
    comp = run_totals(store, run_id)
    doc = _Doc(f"ThoughtLab run report: {run.get('name') or run_id}",
               f"run {run_id} · objective {obj} · model {run.get('model')} · corpus "
               f"{run.get('corpus')} · {run.get('status')}", 7, progress, stream)
    doc.h2("What this run did")
    doc.p(EXPLAIN.get(obj, obj))
    steps, flops, wall = int(comp["steps"]), comp["flops"], comp["wall"]
    budget = float(cfg.get("max_flops") or 0)
    doc.p(f"{steps} optimizer steps, {flops:.3g} training FLOPs"
          + (f" (budget {budget:.3g})" if budget else "") + f", {wall:.0f} s of training"
          + (f"; part of experiment {run['experiment']}" + (f" (arm {cfg['arm']}, seed {cfg.get('seed')})"
                                                            if cfg.get("arm") else "")
             if run.get("experiment") else "") + ".")
    doc.h2("Training curves")
    _curves(doc, store, [run_id], {run_id: obj}, "step")

    doc.h2("Benchmarks")
    res = ex.results_for_evals(store, results.evals_of_run(store, run_id))
    if res.empty:
        doc.p("This run has not been evaluated yet.")
    else:
        doc.table(res[["benchmark", "metric", "thought_mode", "score", "stderr", "n", "checkpoint_step",
                       "flops"]])
        if run.get("experiment"):
            exp_res = ex.experiment_results(store, run["experiment"])
            mine = set(res["eval_id"])
            for against, what in (("reference", "the reference arm (same seed)"), ("base", "the base model")):
                rows = ex.pooled_deltas(store, run["experiment"], against, exp_res)
                pairs = [p for r in rows[rows["primary"]].to_dict("records")
                         for p in seed_pairs(r, exp_res) if p[1]["eval_id"] in mine]
                d = compare_pairs(store, pairs)
                if not d.empty:
                    _deltas_section(doc, d, f"Compared with {what}",
                                    "This run's evals against the reference on the same items "
                                    "(one seed: paired bootstrap CI and McNemar's test on the "
                                    "items that flipped).")
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
    """An experiment: the answer in words, the design (spec), the compute each run used,
    scores across seeds, seed-pooled deltas vs the reference arm and vs the base model, the
    thought controls, training curves with seed bands, example thoughts, the spec file and the
    jobs. `progress`/`stream` as in run_report_html."""
    jobs = ex.experiment_runs(store, experiment_id)
    spec = ex.stored_spec(store.data_dir, experiment_id)
    if jobs.empty and spec is None:
        raise LabError(f"No experiment {experiment_id!r} in {store.path}.")
    compute = ex.compute_table(store, experiment_id)
    res = ex.experiment_results(store, experiment_id)
    names = ex.titles(store, experiment_id)
    train = jobs[jobs["kind"] == "train"]
    arms = [a for a in (list(names) + list(train["arm"])) if a]
    colors = arm_colors(arms)
    vs_ref = ex.pooled_deltas(store, experiment_id, "reference", res)
    vs_base = ex.pooled_deltas(store, experiment_id, "base", res)
    thoughts = ex.thought_deltas(store, experiment_id, res)
    arm_runs = train[train["arm"] != "base"]
    doc = _Doc(f"ThoughtLab experiment report: {(spec.title if spec and spec.title else experiment_id)}",
               f"{experiment_id} · model {spec.model if spec else (train['model'].iloc[0] if not train.empty else '?')}"
               f" · {len(jobs[jobs['status'] == 'finished'])} of {len(jobs)} jobs finished",
               11 + arm_runs["arm"].nunique(), progress, stream)
    doc.h2("The answer")
    for line in experiment_summary(store, experiment_id, res, vs_ref, thoughts):
        doc.p(line)
    doc.h2("The question")
    doc.p("Does reasoning at the level of single tokens during pretraining (Quiet-STaR, RLP, RPT) "
          "make a model reason better than plain next-token prediction (NTP) given the same "
          "training compute? Every arm below started from the same model, read the same corpus, "
          "was trained with several seeds, and was evaluated on the same benchmark items with the "
          "same prompts.")
    for obj in dict.fromkeys(train["objective"]):
        doc.p(EXPLAIN.get(obj, obj))
    doc.h2("Design")
    if spec is not None:
        doc.p((f"Pretraining: {spec.pretrain.steps} NTP steps, one shared run (the pretrained base); "
               "every arm and seed continues from its final checkpoint. " if spec.pretrain.steps else
               "No pretraining: every arm starts from the model itself. ")
              + (f"Budget: the training FLOPs of {spec.branch.budget_steps} NTP steps per run. "
                 if spec.branch.budget_mode == "flops" else
                 f"Budget: {spec.branch.budget_steps} optimizer steps per run. ")
              + f"Seeds: {', '.join(map(str, spec.seeds))}. Items per benchmark: "
              + ", ".join(f"{b} {spec.limit_of(b) or 'all'}" for b in spec.evaluation.benchmarks) + ".")
        doc.table(pd.DataFrame([{"arm": a.id, "title": a.display, "objective": a.objective,
                                 "settings": json.dumps(a.params) if a.params else "defaults",
                                 "training overrides": json.dumps(a.training) if a.training else ""}
                                for a in spec.arms]))
    doc.h2("Compute: what was matched")
    budgets = compute["budget_flops"][compute["budget_flops"] > 0]
    if not budgets.empty:
        doc.p(f"Every arm had the same training budget of {budgets.iloc[0]:.3g} FLOPs per run (forward "
              "+ backward, thought sampling included) and stopped once it was spent: a costlier "
              "objective therefore takes fewer steps, and a run may overshoot by half a step. "
              "Rows '@ steps of X' are the reference's checkpoint at X's step count (same seed), "
              "for the comparison at matched steps.", "note")
    else:
        doc.p("Every run did the same number of optimizer steps; their FLOPs differ (below).", "note")
    doc.table(compute[["arm", "seed", "objective", "status", "steps", "flops", "budget_flops",
                       "budget_share", "flops_per_step"]])

    doc.h2("Scores")
    scores = results.score_table(res)
    if scores.empty:
        doc.p("No evaluation has finished yet.")
    else:
        n_min = int(scores["n"].min())
        if n_min < 100:
            doc.p(f"Only {n_min} items per benchmark (or fewer): confidence intervals are wide, so "
                  "read this as a smoke test unless the differences are large.", "note")
        doc.p(f"Bars: the mean over seeds; whiskers: {BAND}; dots: each seed. The table lists "
              "every seed's score.")
        for hib in (True, False):
            if (scores["higher_is_better"] == hib).any():
                doc.fig(seed_scores_figure(scores, higher_is_better=hib, colors=colors))
                doc.p(takeaways.scores(scores, hib), "takeaway")
        doc.table(score_display(scores))
    _pooled_section(doc, vs_ref, "Each arm vs the reference (NTP)",
                    "The central comparison: each arm's final checkpoints against the reference arm "
                    "trained with the same budget (matched: FLOPs) and, where evaluated, the "
                    "reference's checkpoint at the arm's own step count (matched: steps). " + READING,
                    colors)
    _pooled_section(doc, vs_base, "Every arm vs the base model",
                    "What training changed at all, against the base every arm started from (the "
                    "pretrained base when there was pretraining). " + READING, colors)
    _pooled_section(doc, thoughts, "Are Quiet-STaR's thoughts used?",
                    "The same checkpoints evaluated without thoughts, with their own thoughts, and "
                    "with thoughts replaced by random tokens of the same length. If corrupted "
                    "thoughts score like real ones, the thoughts act as scaffolding, not as reasoning.",
                    colors)
    doc.h2("Training curves")
    train = arm_runs                                     # the arms; the pretraining is not on this axis
    if train.empty:
        doc.p("(no training run yet)")
    else:
        doc.p(f"Against training FLOPs, so the curves line up at equal compute. Line: the mean "
              f"over seeds; band: {BAND}.")
        df = store.metrics(train["id"].tolist(), [m for m, _ in CURVES])
        run_arm = dict(zip(train["id"], train["arm"]))
        for metric, title in CURVES:
            if (df["name"] == metric).any():
                doc.fig(band_curves_figure(df, metric, run_arm, names, x="flops", title=title, colors=colors))
                doc.p(takeaways.curve(df, metric, run_arm, names, title), "takeaway")
    for arm, g in arm_runs.groupby("arm", sort=False):
        if g["objective"].iloc[0] == "ntp":
            continue
        doc.h2(f"Example thoughts: {names.get(arm, arm)}")
        doc.raw(_thoughts_html(top_thoughts(store, g["id"].iloc[0], k=3)))
    doc.h2("The spec")
    text = results.spec_text(store, experiment_id)
    state = ex.read_state(store.data_dir, experiment_id)
    if state.get("command"):
        doc.p(f"Command: {state['command']}", "sub")
    doc.raw(f"<pre class='ctx'>{_e(text)}</pre>" if text else "<p>(launched before spec files)</p>")
    doc.h2("Jobs")
    doc.table(jobs[["id", "kind", "arm", "seed", "name", "status", "step", "max_steps", "error"]])
    return doc.html()


def report_file_name(kind: str, ident: str) -> str:
    return f"thoughtlab-{kind}-{''.join(c if c.isalnum() or c in '-_' else '_' for c in ident)}.html"

