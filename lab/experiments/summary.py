"""The answer, in words: the sentences that open an experiment's results (page and report),
computed from the seed-pooled comparisons.

Each claim is a function `claim(ctx) -> list[str]` in CLAIMS, run in order; one that has
nothing to say returns []. Issue 12's questions (does thinking only at forking tokens keep the
gain at a fraction of the cost? do random thoughts do as well? does the gain hold on the
shifted splits?) are `forking_tokens`, `random_thoughts` and `shifted_splits`.
Wording rules: a difference is named only when its 95 % CI excludes 0 ("no clear difference"
otherwise), and it says whether the effect is larger than the seed-to-seed spread.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from lab.experiments.spec import ExperimentSpec


def _shifted_of() -> dict[str, tuple[str, ...]]:
    """In-distribution math benchmark -> its length- and format-shifted splits (same level)."""
    from lab.evaluation.benchmarks import BENCHMARKS, MATH_BENCHMARKS
    return {t: tuple(s for s in MATH_BENCHMARKS if BENCHMARKS[s].level == BENCHMARKS[t].level
                     and BENCHMARKS[s].split in ("longer", "format"))
            for t in MATH_BENCHMARKS if BENCHMARKS[t].split == "test"}


SHIFTED_OF = _shifted_of()              # {"math-test": ("math-longer", "math-format"), ...}
METRIC_WORDS = {"acc": "accuracy", "nll": "held-out NLL", "answer_nll": "answer NLL",
                "solution_nll": "solution NLL", "forking_nll": "NLL on forking tokens"}


@dataclass
class SummaryContext:
    spec: ExperimentSpec | None
    titles: dict[str, str]
    budget_flops: float
    vs_reference: pd.DataFrame                  # compare.pooled rows against the reference arm
    thoughts: pd.DataFrame = field(default_factory=pd.DataFrame)   # thought-mode comparisons
    jobs_total: int = 0
    jobs_finished: int = 0

    def title(self, arm: str) -> str:
        return self.titles.get(arm, arm)

    @property
    def budget_match(self) -> str:
        """The `matched` value of the comparisons at the experiment's own budget."""
        return "steps" if self.spec is not None and self.spec.branch.budget_mode == "steps" else "FLOPs"

    @property
    def reference(self) -> str:
        return self.spec.reference_arm if self.spec else "ntp"


def fmt_delta(row: dict, with_ci: bool = True) -> str:
    """'+4.1 points (95 % CI +1.2 to +7.0, 3 seeds)' for accuracy, nats for NLLs."""
    points = row["metric"] == "acc"
    k, unit, digits = (100.0, " points", 1) if points else (1.0, " nats", 3)

    def num(v: float) -> str:
        return f"{v * k:+.{digits}f}".replace("-", "−")
    text = num(row["delta"]) + unit
    if with_ci:
        seeds = int(row["n_seeds"])
        text += f" (95 % CI {num(row['ci_low'])} to {num(row['ci_high'])}, {seeds} seed{'s' * (seeds != 1)})"
    return text


def sci(x: float) -> str:
    """2.1e14 (two significant digits, no '+' or leading zeros in the exponent)."""
    mantissa, _, exp = f"{x:.1e}".partition("e")
    return f"{mantissa}e{int(exp)}"


def verdict_words(row: dict) -> str:
    v = str(row["verdict"])
    if v.startswith(("better", "worse")) and not (isinstance(row["seed_sd"], float) and math.isnan(row["seed_sd"])):
        unit = " points" if row["metric"] == "acc" else " nats"
        k = 100.0 if row["metric"] == "acc" else 1.0
        v += f" (sd {row['seed_sd'] * k:.2g}{unit})"
    return v


def _rows(df: pd.DataFrame, **match) -> list[dict]:
    if df.empty:
        return []
    sel = df
    for k, v in match.items():
        sel = sel[sel[k] == v]
    return sel.to_dict("records")


# ---- claims --------------------------------------------------------------------------------------
def headline(ctx: SummaryContext) -> list[str]:
    spec = ctx.spec
    if spec is None:
        return []
    start = (f"After the same pretraining ({spec.pretrain.steps} NTP steps of {spec.model})"
             if spec.pretrain.steps else f"From the same model ({spec.model})")
    budget = (f"at {sci(ctx.budget_flops)} training FLOPs per run" if spec.branch.budget_mode == "flops"
              and ctx.budget_flops else f"at {spec.branch.budget_steps} optimizer steps per run")
    seeds = len(spec.seeds)
    return [f"{start}, {budget}, {seeds} seed{'s' * (seeds != 1)} per arm, on the same "
            f"items of each benchmark:"]


def arm_vs_reference(ctx: SummaryContext) -> list[str]:
    """Each arm against the reference at the matched budget, on every benchmark's own score."""
    out = []
    for arm in dict.fromkeys(r["arm"] for r in _rows(ctx.vs_reference, primary=True, thought_mode="none")):
        rows = _rows(ctx.vs_reference, primary=True, thought_mode="none", arm=arm, matched=ctx.budget_match)
        if not rows:
            continue
        parts = [f"on {r['benchmark']} ({METRIC_WORDS.get(r['metric'], r['metric'])}): "
                 f"{fmt_delta(r)}, {verdict_words(r)}" for r in rows]
        out.append(f"{ctx.title(arm)} vs {ctx.title(ctx.reference)} " + "; ".join(parts) + ".")
    return out


def sensitive_metrics(ctx: SummaryContext) -> list[str]:
    """The teacher-forced NLLs, which move before exact match does."""
    out = []
    rows = _rows(ctx.vs_reference, primary=False, thought_mode="none", matched=ctx.budget_match)
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm and r["metric"] != "solution_nll"]
        if mine:
            out.append(f"{ctx.title(arm)} vs {ctx.title(ctx.reference)}, sensitive metrics (lower is "
                       "better): " + "; ".join(f"{METRIC_WORDS.get(r['metric'], r['metric'])} on "
                                              f"{r['benchmark']} {fmt_delta(r)}, {r['verdict']}"
                                              for r in mine) + ".")
    return out


def matched_steps(ctx: SummaryContext) -> list[str]:
    """The same comparison at matched optimizer steps (flops-mode experiments)."""
    if ctx.budget_match == "steps":
        return []
    out = []
    for arm in dict.fromkeys(r["arm"] for r in _rows(ctx.vs_reference, primary=True, matched="steps")):
        rows = _rows(ctx.vs_reference, primary=True, matched="steps", arm=arm)
        out.append(f"At matched steps ({ctx.title(ctx.reference)} at {ctx.title(arm)}'s step count), "
                   f"{ctx.title(arm)}: " + "; ".join(f"{r['benchmark']} {fmt_delta(r, False)}, {r['verdict']}"
                                                     for r in rows) + ".")
    return out


def shifted_splits(ctx: SummaryContext) -> list[str]:
    """Does an in-distribution gain hold on the length- and format-shifted splits?"""
    out = []
    for test, shifted_names in SHIFTED_OF.items():
        out += _shifted_lines(ctx, test, shifted_names)
    return out


def _shifted_lines(ctx: SummaryContext, test: str, shifted_names: tuple[str, ...]) -> list[str]:
    out = []
    for r in _rows(ctx.vs_reference, primary=True, thought_mode="none", benchmark=test,
                   matched=ctx.budget_match):
        shifted = [s for s in _rows(ctx.vs_reference, primary=True, thought_mode="none", arm=r["arm"],
                                    matched=r["matched"]) if s["benchmark"] in shifted_names]
        if not shifted:
            continue
        if not str(r["verdict"]).startswith("better"):
            out.append(f"Shifted splits: {ctx.title(r['arm'])} shows no in-distribution gain on "
                       f"{test} to carry over.")
            continue
        holds = [s["benchmark"] for s in shifted if str(s["verdict"]).startswith("better")]
        out.append(f"Shifted splits: {ctx.title(r['arm'])}'s gain on {test} "
                   + (f"holds on {', '.join(holds)}" if holds else "does not hold clearly on either")
                   + "; " + "; ".join(f"{s['benchmark']} {fmt_delta(s, False)}" for s in shifted) + ".")
    return out


def thought_content(ctx: SummaryContext) -> list[str]:
    """Quiet-STaR with its own thoughts vs corrupted ones: content or scaffolding?"""
    out = []
    rows = _rows(ctx.thoughts, primary=True, thought_mode="corrupted")
    for r in [r for r in rows if r["ref_thought_mode"] == "thoughts"]:
        word = ("the thoughts' content matters" if str(r["verdict"]).startswith("worse")
                else "no sign that the thoughts' content matters (scaffolding?)"
                if r["verdict"] == "no clear difference" else str(r["verdict"]))
        out.append(f"{ctx.title(r['arm'])} on {r['benchmark']}: corrupted vs its own thoughts "
                   f"{fmt_delta(r)}: {word}.")
    return out


# ---- the research note's claims (issue 12) ------------------------------------------------------
def _better(row: dict | None) -> bool:
    return row is not None and str(row["verdict"]).startswith("better")


def _counterpart(spec: ExperimentSpec, arm) -> str | None:
    """The arm a forking-only or random-thought arm is compared with: the first arm of the same
    objective that thinks at every position with its own thoughts."""
    return next((a.id for a in spec.arms if a.objective == arm.objective and a.id != arm.id
                 and not a.at_forking and not a.random_thoughts), None)


def _by_benchmark(ctx: SummaryContext, arm: str, modes: tuple[str, ...]) -> tuple[dict[str, dict], str]:
    """An arm's primary rows vs the reference at the experiment's budget, by benchmark, in the
    first thought mode of `modes` that has any; and that mode."""
    for mode in modes:
        rows = _rows(ctx.vs_reference, primary=True, thought_mode=mode, arm=arm, matched=ctx.budget_match)
        if rows:
            return {r["benchmark"]: r for r in rows}, mode
    return {}, modes[-1]


def _step_cost(row: dict) -> float:
    """Training FLOPs per optimizer step, as a multiple of the reference's."""
    if not (row["steps"] and row["steps_ref"] and row["flops_ref"]):
        return math.nan
    return (row["flops"] / row["steps"]) / (row["flops_ref"] / row["steps_ref"])


def _pairs(ctx: SummaryContext, mine: dict, theirs: dict, name: str, other: str) -> str:
    return "; ".join(f"{b} {fmt_delta(r, False)} ({r['verdict']})"
                     + (f" vs {fmt_delta(theirs[b], False)} ({theirs[b]['verdict']}) for {other}"
                        if b in theirs else "") for b, r in mine.items())


def forking_tokens(ctx: SummaryContext) -> list[str]:
    """Does thinking only at forking tokens keep the gain at a fraction of the cost?"""
    out = []
    for arm in [a for a in (ctx.spec.arms if ctx.spec else []) if a.at_forking]:
        other = _counterpart(ctx.spec, arm)
        mine, mode = _by_benchmark(ctx, arm.id, ("thoughts", "none"))
        theirs = _by_benchmark(ctx, other, (mode,))[0] if other else {}
        if not mine:
            continue
        text = (f"Forking tokens only: {ctx.title(arm.id)} vs {ctx.title(ctx.reference)}"
                f"{' (with thoughts)' if mode == 'thoughts' else ''}: "
                + _pairs(ctx, mine, theirs, arm.id, ctx.title(other) if other else "") + ".")
        first = next(iter(mine.values()))
        cost = _step_cost(first)
        if other and first["benchmark"] in theirs:
            full = theirs[first["benchmark"]]
            text += (f" Per step it costs {cost:.1f}× {ctx.title(ctx.reference)} against "
                     f"{_step_cost(full):.1f}× at every position ({first['steps']:.0f} vs "
                     f"{full['steps']:.0f} steps in the same budget).")
        gains = [b for b, r in theirs.items() if _better(r)]
        kept = [b for b in gains if _better(mine.get(b))]
        if not other:
            text += " (No every-position arm of the same objective to compare with.)"
        elif not theirs:
            text += f" ({ctx.title(other)} has no results to compare with yet.)"
        elif not gains:
            text += f" {ctx.title(other)} shows no clear gain, so there is no gain to keep."
        elif kept == gains:
            text += f" Yes: it keeps the gain on {', '.join(kept)} at a fraction of the cost."
        else:
            text += (f" Not fully: the gain on {', '.join(b for b in gains if b not in kept)} is not "
                     "clear with forking tokens only" + (f" (kept on {', '.join(kept)})" if kept else "") + ".")
        out.append(text)
    return out


def random_thoughts(ctx: SummaryContext) -> list[str]:
    """Do random thoughts, trained as scaffolding, do as well as the model's own thoughts?"""
    out = []
    for arm in [a for a in (ctx.spec.arms if ctx.spec else []) if a.random_thoughts]:
        other = _counterpart(ctx.spec, arm)
        mine, mode = _by_benchmark(ctx, arm.id, ("corrupted", "none"))
        theirs = _by_benchmark(ctx, other, ("thoughts" if mode == "corrupted" else "none",))[0] if other else {}
        if not mine:
            continue
        text = (f"Random thoughts, trained: {ctx.title(arm.id)} vs {ctx.title(ctx.reference)}"
                f"{' (each with its own kind of thoughts)' if mode == 'corrupted' else ''}: "
                + _pairs(ctx, mine, theirs, arm.id, ctx.title(other) if other else "") + ".")
        gains = [b for b, r in theirs.items() if _better(r)]
        if not other:
            text += " (No Quiet-STaR arm with its own thoughts to compare with.)"
        elif not theirs:
            text += f" ({ctx.title(other)} has no results to compare with yet.)"
        elif not gains and not any(_better(r) for r in mine.values()):
            text += " Neither shows a clear gain, so content and scaffolding cannot be told apart here."
        elif gains and all(_better(mine.get(b)) for b in gains):
            text += " Random thoughts do as well: the gain looks like scaffolding, not content."
        elif gains:
            text += " Random thoughts do not do as well: the thoughts' content matters."
        else:
            text += " Random thoughts gain where the real ones do not."
        out.append(text)
    return out


CLAIMS: list[Callable[[SummaryContext], list[str]]] = [
    headline, arm_vs_reference, sensitive_metrics, matched_steps, forking_tokens, random_thoughts,
    shifted_splits, thought_content]


def summary(ctx: SummaryContext) -> list[str]:
    """The summary sentences, in CLAIMS order; a note first when jobs are still to finish."""
    out = []
    if ctx.jobs_total and ctx.jobs_finished < ctx.jobs_total:
        out.append(f"Partial: {ctx.jobs_finished} of {ctx.jobs_total} jobs have finished; the "
                   "sentences below cover the results so far.")
    body = [s for claim in CLAIMS for s in claim(ctx)]
    if len(body) <= len(headline(ctx)):
        return out + ["No comparison with the reference arm is available yet."]
    return out + body


def experiment_summary(store, experiment_id: str, results: pd.DataFrame | None = None,
                       vs_reference: pd.DataFrame | None = None,
                       thoughts: pd.DataFrame | None = None) -> list[str]:
    """summary() of a stored experiment (the pooled tables are computed when not given)."""
    from lab.experiments.compare import pooled_deltas, thought_deltas
    from lab.experiments.driver import read_state, stored_spec
    from lab.experiments.results import compute_table, experiment_results, experiment_runs, titles
    res = experiment_results(store, experiment_id) if results is None else results
    vs_ref = pooled_deltas(store, experiment_id, "reference", res) if vs_reference is None else vs_reference
    th = thought_deltas(store, experiment_id, res) if thoughts is None else thoughts
    budget = float(read_state(store.data_dir, experiment_id).get("budget_flops") or 0.0)
    if not budget:
        comp = compute_table(store, experiment_id)
        budget = float(comp["budget_flops"].max()) if not comp.empty else 0.0
    jobs = experiment_runs(store, experiment_id)
    return summary(SummaryContext(stored_spec(store.data_dir, experiment_id), titles(store, experiment_id),
                                  budget, vs_ref, th, len(jobs), int((jobs["status"] == "finished").sum())))
