"""How each benchmark is scored: one scoring function per kind of benchmark, and the
`Scoring` record the benchmark registry (lab/evaluation/benchmarks.py) attaches to every
benchmark: the function, the primary metric's name, the per-item secondary metrics, and the
model passes per item. Every function has the signature

    score(engine, items, spec, progress, reference=None) -> (rows, metrics, info)

`rows`: one dict per item (item_id, correct, prediction, target, extra); `metrics`: extra
aggregate metrics {name: {score, stderr, n}}; `info`: facts about the run stored with it.
`reference` is an Engine of the spec's reference model, given only to scorings that use one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from lab.errors import LabError
from lab.evaluation import extract, prompts, stats

COT_FINAL_TOKENS = 16
MATH_STOP_REGEX = r"answer is\s*[-−]?\$?\s?\d[\d,]*(?:\.\d+)?\s*\."
# Secondary metrics with a value per item (eval_items.extra[ITEM_METRICS]), so they pair up
# item by item like the primary score; all are NLLs in nats (lower is better).
ITEM_METRICS = "metrics"


@dataclass(frozen=True)
class Scoring:
    score: Callable[..., tuple[list[dict], dict, dict]]
    metric: str = "acc"                  # the primary score's name (evals.score)
    item_metrics: tuple[str, ...] = ()   # per-item secondary metrics (eval_items.extra.metrics)
    passes: int = 1                      # model passes per item (progress and ETA)
    uses_reference: bool = False         # takes spec.reference as a second model


def _row(item: Any, correct: float, prediction: Any, extra: dict) -> dict:
    return {"item_id": item.id, "correct": float(correct), "target": item.target,
            "prediction": "" if prediction is None else str(prediction), "extra": extra}


def _gsm8k(engine, items, spec, progress, reference=None):
    gens = engine.generate([it.prompt for it in items], max_new_tokens=spec.new_tokens(),
                           batch_size=spec.batch_size, stops=prompts.DIRECT_STOPS, progress=progress)
    rows = []
    for it, g in zip(items, gens):
        pred = extract.extract_number(g, which="first", stops=prompts.DIRECT_STOPS)
        rows.append(_row(it, extract.same_number(pred, it.target), pred,
                         {"generation": g, "prompt": it.prompt}))
    return rows, {}, {}


def _gsm8k_cot(engine, items, spec, progress, reference=None):
    stage1 = engine.generate([it.prompt for it in items], max_new_tokens=spec.new_tokens(),
                             batch_size=spec.batch_size, stops=prompts.COT_STOPS, progress=progress)
    reasoning = [extract.cut(g, prompts.COT_STOPS) for g in stage1]
    finals = [prompts.gsm8k_cot_final(it.prompt, r) for it, r in zip(items, reasoning)]
    stage2 = engine.generate(finals, max_new_tokens=COT_FINAL_TOKENS, batch_size=spec.batch_size,
                             stops=("\n",), progress=progress)
    rows = []
    for it, g1, r, g2 in zip(items, stage1, reasoning, stage2):
        pred = extract.extract_number(g2, which="first", stops=("\n",))
        rows.append(_row(it, extract.same_number(pred, it.target), pred,
                         {"generation": g1, "reasoning": r, "final_generation": g2,
                          "prompt": it.prompt}))
    return rows, {}, {}


def _csqa(engine, items, spec, progress, reference=None):
    letter_tokens = []
    for it in items:
        toks = engine.encode([" " + lab for lab in it.labels])
        letter_tokens.append([t[0] for t in toks])
    conts = [[prompts.csqa_continuation(t) for t in it.texts] for it in items]
    scored = engine.score_choices([it.prompt for it in items], conts, batch_size=spec.batch_size,
                                  letter_tokens=letter_tokens, progress=progress)
    rows, norm_ok, letter_ok = [], [], []
    for it, c, s in zip(items, conts, scored):
        lp = s["logprob"]
        best = max(range(len(lp)), key=lambda j: lp[j])
        norm = [v / max(len(text.encode("utf-8")), 1) for v, text in zip(lp, c)]
        best_norm = max(range(len(norm)), key=lambda j: norm[j])
        best_letter = max(range(len(lp)), key=lambda j: s["letter_logprob"][j])
        pred = it.labels[best]
        norm_ok.append(float(it.labels[best_norm] == it.target))
        letter_ok.append(float(it.labels[best_letter] == it.target))
        rows.append(_row(it, pred == it.target, pred, {
            "logprob": lp, "ntok": s["ntok"], "choices": it.texts,
            "prediction_text": it.texts[best], "pred_norm": it.labels[best_norm],
            "pred_letter": it.labels[best_letter], "letter_logprob": s["letter_logprob"]}))
    extra = {"acc_norm": _metric(norm_ok), "letter": _metric(letter_ok)}
    return rows, extra, {}


def _csqa_gen(engine, items, spec, progress, reference=None):
    gens = engine.generate([it.prompt for it in items], max_new_tokens=spec.new_tokens(),
                           batch_size=spec.batch_size, stops=prompts.DIRECT_STOPS, progress=progress)
    rows = []
    for it, g in zip(items, gens):
        pred = extract.extract_letter(g, it.labels, it.texts, stops=prompts.DIRECT_STOPS)
        rows.append(_row(it, pred == it.target, pred, {"generation": g, "choices": it.texts}))
    return rows, {}, {}


def _math(engine, items, spec, progress, reference=None):
    """Exact match of the generated answer, plus the teacher-forced answer_nll and
    solution_nll of the gold solution (lab/evaluation/teacher_forced.py) per item."""
    from lab.evaluation import teacher_forced
    gens = engine.generate([it.prompt for it in items], max_new_tokens=spec.new_tokens(),
                           batch_size=spec.batch_size, stops=prompts.MATH_STOPS,
                           stop_regex=MATH_STOP_REGEX, progress=progress)
    forced = teacher_forced.item_metrics(engine, items, batch_size=spec.batch_size, progress=progress)
    rows = []
    for it, g, m in zip(items, gens, forced):
        pred = extract.extract_number(g, which="last", stops=prompts.MATH_STOPS)
        rows.append(_row(it, extract.same_number(pred, it.target), pred,
                         {"generation": g, "question": it.meta.get("question"), ITEM_METRICS: m}))
    return rows, {name: _metric([m[name] for m in forced]) for name in teacher_forced.METRICS}, {}


def _heldout(engine, items, spec, progress, reference=None):
    import torch
    from lab.entropy import forking_mask
    from lab.evaluation.benchmarks import FORKING_RHO, HELDOUT_MAX_TOKENS
    ref_engine = reference
    texts = [it.prompt for it in items]
    st = engine.token_stats(texts, batch_size=spec.batch_size, max_tokens=HELDOUT_MAX_TOKENS,
                            progress=progress)
    if ref_engine is not None:
        ref = ref_engine.token_stats(texts, batch_size=spec.batch_size,
                                     max_tokens=HELDOUT_MAX_TOKENS, progress=progress)
        for s, r in zip(st, ref):
            if s["ids"] != r["ids"]:
                raise LabError("The reference model tokenises the corpus differently from the "
                               "evaluated model; forking tokens need the same tokenizer.")
            s["entropy"] = r["entropy"]
    keep = [i for i, s in enumerate(st) if len(s["nll"]) > 0]
    if not keep:
        raise LabError("Every held-out document is shorter than 2 tokens; nothing to score.")
    ent = torch.cat([st[i]["entropy"] for i in keep])
    fork = forking_mask(ent, torch.ones_like(ent, dtype=torch.bool), FORKING_RHO)
    threshold = float(ent[fork].min()) if fork.any() else float("nan")
    rows, sums, counts, fsums, fcounts = [], [], [], [], []
    offset = 0
    for i in keep:
        it, s = items[i], st[i]
        n = len(s["nll"])
        f = fork[offset:offset + n]
        offset += n
        doc_nll = float(s["nll"].mean())
        fn = int(f.sum())
        fsum = float(s["nll"][f].sum()) if fn else 0.0
        sums.append(float(s["nll"].sum()))
        counts.append(n)
        fsums.append(fsum)
        fcounts.append(fn)
        rows.append({"item_id": it.id, "correct": doc_nll, "prediction": f"{doc_nll:.6f}",
                     "target": "", "extra": {
                         "n_tokens": n, "nll_sum": sums[-1], "n_forking": fn,
                         "forking_nll_sum": fsum, "forking_nll": fsum / fn if fn else None,
                         "entropy_mean": float(s["entropy"].mean()),
                         ITEM_METRICS: {"forking_nll": fsum / fn if fn else None}}})
    tok_nll = sum(sums) / sum(counts)
    metrics = {
        "nll-token": {"score": tok_nll, "stderr": nan_none(stats.ratio_stderr(sums, counts)),
                      "n": len(rows)},
        "nll-forking": {"score": sum(fsums) / max(sum(fcounts), 1),
                        "stderr": nan_none(stats.ratio_stderr(fsums, fcounts)), "n": len(rows)},
        "nll-nonforking": {"score": (sum(sums) - sum(fsums)) / max(sum(counts) - sum(fcounts), 1),
                           "stderr": nan_none(stats.ratio_stderr(
                               [a - b for a, b in zip(sums, fsums)],
                               [a - b for a, b in zip(counts, fcounts)])), "n": len(rows)},
        "ppl": {"score": math.exp(min(tok_nll, 700.0)), "stderr": None, "n": len(rows)},
        "forking_nll": _metric([r["extra"][ITEM_METRICS]["forking_nll"] for r in rows]),
    }
    info = {"tokens": int(sum(counts)), "forking_tokens": int(sum(fcounts)),
            "forking_threshold": threshold, "forking_rho": FORKING_RHO,
            "entropy_p80": float(torch.quantile(ent, 0.8)) if ent.numel() > 1 else float(ent[0]),
            "entropy_share_below_0.01": float((ent < 0.01).float().mean()),
            "entropy_model": spec.reference or "self",
            "dropped_short_docs": len(items) - len(keep)}
    return rows, metrics, info


def _metric(values: list[float | None]) -> dict:
    """Mean, stderr and count of the values that exist (None: the item has no value)."""
    values = [v for v in values if v is not None]
    return {"score": stats.mean(values), "stderr": nan_none(stats.stderr(values)), "n": len(values)}


def nan_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


GSM8K = Scoring(_gsm8k)
GSM8K_COT = Scoring(_gsm8k_cot, passes=2)
CSQA = Scoring(_csqa)
CSQA_GEN = Scoring(_csqa_gen)
MATH = Scoring(_math, item_metrics=("answer_nll", "solution_nll"), passes=2)
HELDOUT_NLL = Scoring(_heldout, metric="nll", item_metrics=("forking_nll",), uses_reference=True)
