"""run_eval (one model on one benchmark -> rows in `evals` / `eval_items`), compare (two
evals, paired), and the `python -m lab eval` command line."""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from lab.errors import LabError
from lab.evaluation import extract, prompts, stats
from lab.evaluation.benchmarks import (BENCHMARKS, FORKING_RHO, HELDOUT_BENCHMARKS, HELDOUT_MAX_TOKENS,
                                       MATH_BENCHMARKS, Item, load_items)
from lab.evaluation.spec import DEVICES, THOUGHT_MODES, EvalSpec
from lab.progress import Progress

COT_FINAL_TOKENS = 16
MATH_STOP_REGEX = r"answer is\s*[-−]?\$?\s?\d[\d,]*(?:\.\d+)?\s*\."
SCORE_COLUMNS = ["eval_id", "benchmark", "mode", "metric", "n", "score", "stderr"]


# ---- model spec and device ------------------------------------------------------------------
def resolve_model_spec(model: str, store=None) -> str:
    """A bare run id (or `ID@STEP`) known to the store becomes `run:ID`; anything else as is."""
    from lab.models import PRESETS
    spec = (model or "").strip()
    if not spec or spec.startswith("run:") or spec in PRESETS:
        return spec
    if Path(spec).expanduser().exists() or spec.startswith((".", "/", "~")):
        return spec
    if store is not None:
        body = spec.partition("@")[0]
        try:
            if store.get_run(body) is not None:
                return "run:" + spec
        except LabError:
            pass
    return spec


def run_id_of(model_spec: str) -> str | None:
    if model_spec.startswith("run:"):
        return model_spec[4:].partition("@")[0] or None
    return None


def pick_device(device: str):
    import torch
    if device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if device == "gpu":
        raise LabError("device 'gpu' was asked for but no CUDA GPU is visible; use device auto or cpu.")
    return torch.device("cpu")


def thinker(spec: EvalSpec, model_spec: str, store) -> Callable:
    """Quiet-STaR's inference function for thought modes, after checking the model is a
    Quiet-STaR checkpoint. Raises LabError otherwise."""
    from lab.objectives.quiet_star import inference   # torch and transformers: loaded on use
    run_id = run_id_of(model_spec)
    if run_id is None:
        raise LabError(f"thought_mode {spec.thought_mode!r} needs a Quiet-STaR checkpoint "
                       f"(run:<id>); {model_spec!r} is not a training run.")
    run = store.get_run(run_id) if store is not None else None
    objective = (run or {}).get("objective")
    if objective != "quiet-star":
        raise LabError(f"thought_mode {spec.thought_mode!r} needs a Quiet-STaR checkpoint; run "
                       f"{run_id!r} was trained with objective {objective or 'unknown'!r}.")
    return inference.think


# ---- the benchmarks ---------------------------------------------------------------------------
def _row(item: Item, correct: float, prediction: Any, extra: dict) -> dict:
    return {"item_id": item.id, "correct": float(correct), "target": item.target,
            "prediction": "" if prediction is None else str(prediction), "extra": extra}


def _gsm8k(engine, items, spec, progress):
    gens = engine.generate([it.prompt for it in items], max_new_tokens=spec.new_tokens(),
                           batch_size=spec.batch_size, stops=prompts.DIRECT_STOPS, progress=progress)
    rows = []
    for it, g in zip(items, gens):
        pred = extract.extract_number(g, which="first", stops=prompts.DIRECT_STOPS)
        rows.append(_row(it, extract.same_number(pred, it.target), pred,
                         {"generation": g, "prompt": it.prompt}))
    return rows, {}


def _gsm8k_cot(engine, items, spec, progress):
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
    return rows, {}


def _csqa(engine, items, spec, progress):
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
    return rows, extra


def _csqa_gen(engine, items, spec, progress):
    gens = engine.generate([it.prompt for it in items], max_new_tokens=spec.new_tokens(),
                           batch_size=spec.batch_size, stops=prompts.DIRECT_STOPS, progress=progress)
    rows = []
    for it, g in zip(items, gens):
        pred = extract.extract_letter(g, it.labels, it.texts, stops=prompts.DIRECT_STOPS)
        rows.append(_row(it, pred == it.target, pred, {"generation": g, "choices": it.texts}))
    return rows, {}


def _math(engine, items, spec, progress):
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
    return rows, {name: _metric([m[name] for m in forced]) for name in teacher_forced.METRICS}


def _heldout(engine, items, spec, progress, ref_engine=None):
    import torch
    from lab.entropy import forking_mask
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
        "nll-token": {"score": tok_nll, "stderr": _nan_none(stats.ratio_stderr(sums, counts)),
                      "n": len(rows)},
        "nll-forking": {"score": sum(fsums) / max(sum(fcounts), 1),
                        "stderr": _nan_none(stats.ratio_stderr(fsums, fcounts)), "n": len(rows)},
        "nll-nonforking": {"score": (sum(sums) - sum(fsums)) / max(sum(counts) - sum(fcounts), 1),
                           "stderr": _nan_none(stats.ratio_stderr(
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
    return {"score": stats.mean(values), "stderr": _nan_none(stats.stderr(values)), "n": len(values)}


def _nan_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


TASKS = {"gsm8k": _gsm8k, "gsm8k-cot": _gsm8k_cot, "csqa": _csqa, "csqa-gen": _csqa_gen,
         **{b: _math for b in MATH_BENCHMARKS}}
PRIMARY_METRIC = {b: "nll" for b in HELDOUT_BENCHMARKS}
# Secondary metrics with a value per item (eval_items.extra[ITEM_METRICS]), so they pair up
# item by item like the primary score; all are NLLs in nats (lower is better).
ITEM_METRICS = "metrics"
ITEM_METRIC_NAMES = {**{b: ("answer_nll", "solution_nll") for b in MATH_BENCHMARKS},
                     **{b: ("forking_nll",) for b in HELDOUT_BENCHMARKS}}
PASSES = {"gsm8k-cot": 2, **{b: 2 for b in MATH_BENCHMARKS}}


# ---- run_eval ---------------------------------------------------------------------------------
def run_eval(spec: EvalSpec, store, *, eval_id: str | None = None,
             progress_callback: Callable[[float, str], None] | None = None,
             loaded=None) -> pd.DataFrame:
    """Evaluate `spec.model` on `spec.benchmark`; write one `evals` row and its `eval_items`;
    return the score table (primary metric first, then secondary metrics). `loaded` (a
    lab.models.LoadedModel of spec.model) skips loading it again."""
    import torch
    from lab.models import describe, load_model
    from lab.store import git_commit, new_run_id, now, package_versions

    spec.validate()
    bench = BENCHMARKS[spec.benchmark]
    model_spec = resolve_model_spec(spec.model, store)
    run_id = spec.run_id or run_id_of(model_spec)
    think = thinker(spec, model_spec, store) if spec.thought_mode != "none" else None
    device = pick_device(spec.device)
    items = load_items(spec.benchmark, spec.data, spec.limit)
    if not items:
        raise LabError(f"Benchmark {spec.benchmark} has no items to score.")
    passes = PASSES.get(spec.benchmark, 2 if spec.reference else 1)
    progress = Progress(f"eval {spec.benchmark}", total=len(items) * passes, callback=progress_callback)
    progress.update(0, f"loading model {model_spec}")

    t0 = time.monotonic()
    loaded = loaded or load_model(model_spec, store.data_dir, seed=spec.seed)
    model = loaded.model.to(device).eval()
    logits_fn = None
    if think is not None:
        gen = torch.Generator(device="cpu").manual_seed(spec.seed)
        corrupt = spec.thought_mode == "corrupted"

        def logits_fn(ids, mask):   # noqa: F811 - the documented think() interface
            return think(loaded, ids, mask, corrupt=corrupt, generator=gen)
    from lab.evaluation.engine import Engine
    engine = Engine(model, loaded.tokenizer, device, logits_fn=logits_fn)
    load_s = time.monotonic() - t0

    t1, c1 = time.monotonic(), time.process_time()
    info: dict[str, Any] = {}
    if spec.benchmark in HELDOUT_BENCHMARKS:
        ref_engine = None
        if spec.reference:
            ref = load_model(resolve_model_spec(spec.reference, store), store.data_dir, seed=spec.seed)
            ref_engine = Engine(ref.model.to(device).eval(), ref.tokenizer, device)
        rows, metrics, info = _heldout(engine, items, spec, progress, ref_engine)
    else:
        rows, metrics = TASKS[spec.benchmark](engine, items, spec, progress)
    eval_s, cpu_s = time.monotonic() - t1, time.process_time() - c1
    progress.done()

    values = [r["correct"] for r in rows]
    score, err = stats.mean(values), _nan_none(stats.stderr(values))
    eval_id = eval_id or "eval-" + new_run_id()
    primary = PRIMARY_METRIC.get(spec.benchmark, "acc")
    config = {"spec": spec.to_dict(), "model_resolved": model_spec, "mode": bench.mode,
              "metric": primary, "higher_is_better": bench.higher_is_better,
              "item_metrics": list(ITEM_METRIC_NAMES.get(spec.benchmark, ())),
              "prompt_version": prompts.PROMPT_VERSION, "max_new_tokens": spec.new_tokens(),
              "metrics": metrics, "info": info, "device": str(device),
              "model_info": describe(model), "timing": {
                  "load_s": round(load_s, 3), "eval_s": round(eval_s, 3),
                  "cpu_s": round(cpu_s, 3), "threads": torch.get_num_threads(),
                  "items_per_s": round(len(rows) / eval_s, 4) if eval_s > 0 else None},
              "git_commit": git_commit(), "versions": package_versions()}
    _write(store, eval_id, run_id, model_spec, spec.benchmark, bench.mode, len(rows), score, err,
           now(), config, rows)

    table = [{"eval_id": eval_id, "benchmark": spec.benchmark, "mode": bench.mode,
              "metric": primary, "n": len(rows), "score": score, "stderr": err}]
    for name, m in metrics.items():
        table.append({"eval_id": eval_id, "benchmark": spec.benchmark, "mode": bench.mode,
                      "metric": name, "n": m["n"], "score": m["score"], "stderr": m["stderr"]})
    return pd.DataFrame(table, columns=SCORE_COLUMNS)


def run_eval_job(store, job_id: str, specs: list[EvalSpec],
                 progress_callback: Callable[[float, str], None] | None = None) -> list[str]:
    """An eval job of several benchmarks on one model (jobs.manager.submit_evals): the
    model is loaded once; eval i gets the id `<job_id>-<benchmark>`. A benchmark that fails
    does not stop the others; the job then fails naming it. Returns the eval ids."""
    from lab.models import load_model, pin_steps_of
    model = pin_steps_of(resolve_model_spec(specs[0].model, store), store.data_dir)
    loaded = load_model(model, store.data_dir, seed=specs[0].seed)
    sizes = [max(s.limit, 1) * PASSES.get(s.benchmark, 1) for s in specs]
    done, ids, failed = 0, [], []
    for spec, size in zip(specs, sizes):
        spec.model = model
        eval_id = f"{job_id}-{spec.benchmark}"
        eval_id += f"-{len(ids) + len(failed)}" if eval_id in ids else ""

        def part(frac: float, msg: str, before=done, size=size) -> None:
            if progress_callback:
                progress_callback((before + frac * size) / sum(sizes), msg)
        try:
            run_eval(spec, store, eval_id=eval_id, progress_callback=part, loaded=loaded)
            ids.append(eval_id)
        except LabError as e:
            failed.append(f"{spec.benchmark}: {e}")
        done += size
    if failed:
        raise LabError("Some benchmarks could not be evaluated:\n- " + "\n- ".join(failed))
    return ids


def _write(store, eval_id, run_id, model, benchmark, mode, n, score, err, created, config, rows):
    items = pd.DataFrame({
        "eval_id": [eval_id] * len(rows),
        "item_id": [r["item_id"] for r in rows],
        "correct": [float(r["correct"]) for r in rows],
        "prediction": [r["prediction"] for r in rows],
        "target": [r["target"] for r in rows],
        "extra": [json.dumps(r["extra"], default=str) for r in rows],
    })
    with store.write() as con:
        # Re-running with the same eval id (a retried job) replaces the earlier result.
        con.execute("DELETE FROM eval_items WHERE eval_id = ?", [eval_id])
        con.execute("DELETE FROM evals WHERE id = ?", [eval_id])
        con.execute("INSERT INTO evals (id, run_id, model, benchmark, mode, n_items, score, stderr, "
                    "created_at, config) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [eval_id, run_id, model, benchmark, mode, n, score, err, created,
                     json.dumps(config, default=str)])
        con.register("_eval_items_in", items)
        try:
            con.execute("INSERT INTO eval_items (eval_id, item_id, correct, prediction, target, extra) "
                        "SELECT eval_id, item_id, correct, prediction, target, extra FROM _eval_items_in")
        finally:
            con.unregister("_eval_items_in")


# ---- compare ----------------------------------------------------------------------------------
def compare(store, eval_id_a: str, eval_id_b: str, *, seed: int = 0, n_boot: int = 10_000,
            level: float = 0.95) -> dict:
    """Paired comparison of two evals on the items they share: delta = b - a."""
    evs = store.query("SELECT id, benchmark, mode, model, run_id, score, config FROM evals "
                      "WHERE id IN (?, ?)", [eval_id_a, eval_id_b])
    found = {r["id"]: r for r in evs.to_dict("records")}
    for e in (eval_id_a, eval_id_b):
        if e not in found:
            raise LabError(f"No eval with id {e!r} in {store.path}.")
    a, b = found[eval_id_a], found[eval_id_b]
    fam_a, fam_b = BENCHMARKS.get(a["benchmark"]), BENCHMARKS.get(b["benchmark"])
    same_family = (a["benchmark"] == b["benchmark"] or
                   (fam_a is not None and fam_b is not None and fam_a.data == fam_b.data
                    and fam_a.higher_is_better == fam_b.higher_is_better))
    if not same_family:
        raise LabError(f"Evals {eval_id_a} ({a['benchmark']}) and {eval_id_b} ({b['benchmark']}) "
                       "are on different benchmarks; compare evals of the same items.")
    ia = store.query("SELECT item_id, correct FROM eval_items WHERE eval_id = ?", [eval_id_a])
    ib = store.query("SELECT item_id, correct FROM eval_items WHERE eval_id = ?", [eval_id_b])
    merged = ia.merge(ib, on="item_id", suffixes=("_a", "_b")).sort_values("item_id", kind="stable")
    if merged.empty:
        raise LabError(f"Evals {eval_id_a} and {eval_id_b} have no items in common "
                       "(different data files or splits?).")
    ca, cb = merged["correct_a"].to_numpy(float), merged["correct_b"].to_numpy(float)
    summary = stats.paired_summary(ca, cb, seed=seed, n_boot=n_boot, level=level)
    binary = summary["p_exact"] is not None
    ids = merged["item_id"].astype(str).to_numpy()
    r2w = ids[(ca > 0.5) & (cb <= 0.5)].tolist() if binary else []
    w2r = ids[(ca <= 0.5) & (cb > 0.5)].tolist() if binary else []
    hib = fam_a.higher_is_better if fam_a is not None else True
    return {
        "eval_a": eval_id_a, "eval_b": eval_id_b,
        "benchmark_a": a["benchmark"], "benchmark_b": b["benchmark"],
        "mode_a": a["mode"], "mode_b": b["mode"], "model_a": a["model"], "model_b": b["model"],
        "n": summary["n"], "n_only_a": int(len(ia) - len(merged)), "n_only_b": int(len(ib) - len(merged)),
        "score_a": summary["score_a"], "score_b": summary["score_b"],
        "delta": summary["delta"], "stderr": _nan_none(summary["stderr"]),
        "ci_low": summary["ci_low"], "ci_high": summary["ci_high"], "ci_level": level,
        "n_boot": n_boot, "seed": seed, "higher_is_better": hib,
        "p_mcnemar": summary["p_exact"], "p_mcnemar_continuity": summary["p_continuity"],
        "n_right_to_wrong": len(r2w) if binary else None,
        "n_wrong_to_right": len(w2r) if binary else None,
        "right_to_wrong": r2w, "wrong_to_right": w2r,
    }


# ---- command line -----------------------------------------------------------------------------
def add_cli_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", default="smollm2-135m",
                        help="preset, model folder, hub id, run id or run:ID[@STEP] (default smollm2-135m)")
    parser.add_argument("--benchmark", choices=list(BENCHMARKS),
                        help="; ".join(f"{b.name}: {b.description}" for b in BENCHMARKS.values()))
    parser.add_argument("--data", default=None,
                        help="benchmark file (.jsonl) or hf:NAME; math/heldout default to the built-in generator")
    parser.add_argument("--limit", type=int, default=0, help="first N items (0 = all)")
    parser.add_argument("--batch-size", type=int, default=8, help="questions per batch (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="0 = the benchmark's default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thought-mode", choices=THOUGHT_MODES, default="none",
                        help="Quiet-STaR checkpoints: evaluate with thoughts or corrupted thoughts")
    parser.add_argument("--run-id", default=None, help="the training run this eval belongs to")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--reference", default="",
                        help="heldout-nll: model whose entropy picks the forking tokens (default: itself)")
    parser.add_argument("--eval-id", default=None, help="id for the eval (default: generated)")
    parser.add_argument("--compare", nargs=2, metavar=("EVAL_A", "EVAL_B"),
                        help="instead of evaluating, compare two stored evals (delta = B - A)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def spec_from_args(args) -> EvalSpec:
    return EvalSpec(model=args.model, benchmark=args.benchmark, data=args.data, limit=args.limit,
                    batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, seed=args.seed,
                    thought_mode=args.thought_mode, run_id=args.run_id, device=args.device,
                    reference=args.reference or "")


def cli_main(args, store) -> int:
    try:
        if getattr(args, "compare", None):
            res = compare(store, args.compare[0], args.compare[1], seed=args.seed)
            print(json.dumps(res, indent=2, default=str) if args.json else format_compare(res))
            return 0
        if not args.benchmark:
            print("error: --benchmark is required (or --compare EVAL_A EVAL_B)", file=sys.stderr)
            return 2
        spec = spec_from_args(args)
        probs = spec.problems()
        if probs:
            print("error: cannot run this evaluation:\n- " + "\n- ".join(probs), file=sys.stderr)
            return 2
        df = run_eval(spec, store, eval_id=args.eval_id)
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(df.to_json(orient="records"))
    else:
        print(format_table(df))
        print(f"eval id: {df['eval_id'].iloc[0]}  (items in table eval_items; "
              f"compare with --compare {df['eval_id'].iloc[0]} OTHER_ID)")
    return 0


def format_table(df: pd.DataFrame) -> str:
    show = df[["benchmark", "mode", "metric", "n", "score", "stderr"]].copy()
    show["score"] = show["score"].map(lambda v: f"{v:.4f}")
    show["stderr"] = show["stderr"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.4f}")
    return show.to_string(index=False)


def format_compare(r: dict) -> str:
    lines = [f"{r['eval_a']} ({r['benchmark_a']}, {r['model_a']})  vs  {r['eval_b']} "
             f"({r['benchmark_b']}, {r['model_b']}) on {r['n']} shared items",
             f"score A {r['score_a']:.4f}  score B {r['score_b']:.4f}  delta (B - A) {r['delta']:+.4f}"
             + (f" ± {r['stderr']:.4f}" if r["stderr"] is not None else ""),
             f"{int(r['ci_level'] * 100)}% paired bootstrap CI [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
             f" ({r['n_boot']} resamples, seed {r['seed']})"]
    if r["p_mcnemar"] is not None:
        lines.append(f"McNemar p = {r['p_mcnemar']:.4g} (exact), {r['p_mcnemar_continuity']:.4g} "
                     f"(continuity); right->wrong {r['n_right_to_wrong']}, wrong->right {r['n_wrong_to_right']}")
    if not r["higher_is_better"]:
        lines.append("(lower is better for this benchmark)")
    return "\n".join(lines)
