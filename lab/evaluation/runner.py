"""run_eval (one model on one benchmark -> rows in `evals` / `eval_items`), compare (two
evals, paired), and the `python -m lab eval` command line."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from lab import queries
from lab.errors import LabError
from lab.evaluation import prompts, stats
from lab.evaluation.benchmarks import BENCHMARKS, load_items
from lab.evaluation.scoring import nan_none
from lab.evaluation.spec import DEVICES, EVAL_PRECISIONS, THOUGHT_MODES, EvalSpec
from lab.precision import autocast, label
from lab.precision import resolve as resolve_precision
from lab.progress import Progress

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


# ---- run_eval ---------------------------------------------------------------------------------
def run_eval(spec: EvalSpec, store, *, eval_id: str | None = None,
             progress_callback: Callable[[float, str], None] | None = None,
             loaded=None) -> pd.DataFrame:
    """Evaluate `spec.model` on `spec.benchmark`; write one `evals` row and its `eval_items`;
    return the score table (primary metric first, then secondary metrics). `loaded` (a
    lab.models.LoadedModel of spec.model) skips loading it again."""
    import torch
    from lab.models import describe, load_model
    from lab.provenance import git_commit, package_versions
    from lab.store import new_run_id, now

    spec.validate()
    bench = BENCHMARKS[spec.benchmark]
    model_spec = resolve_model_spec(spec.model, store)
    run_id = spec.run_id or run_id_of(model_spec)
    think = thinker(spec, model_spec, store) if spec.thought_mode != "none" else None
    device = pick_device(spec.device)
    items = load_items(spec.benchmark, spec.data, spec.limit)
    if not items:
        raise LabError(f"Benchmark {spec.benchmark} has no items to score.")
    scoring = bench.scoring
    use_reference = bool(spec.reference) and scoring.uses_reference
    passes = scoring.passes + int(use_reference)
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
    ref_engine = None
    if use_reference:
        ref = load_model(resolve_model_spec(spec.reference, store), store.data_dir, seed=spec.seed)
        ref_engine = Engine(ref.model.to(device).eval(), ref.tokenizer, device)
    precision = resolve_precision(spec.precision, device.type)
    with autocast(device.type, precision):
        rows, metrics, info = scoring.score(engine, items, spec, progress, reference=ref_engine)
    eval_s, cpu_s = time.monotonic() - t1, time.process_time() - c1
    progress.done()

    values = [r["correct"] for r in rows]
    score, err = stats.mean(values), nan_none(stats.stderr(values))
    eval_id = eval_id or "eval-" + new_run_id()
    primary = scoring.metric
    config = {"spec": spec.to_dict(), "model_resolved": model_spec, "mode": bench.mode,
              "metric": primary, "higher_is_better": bench.higher_is_better,
              "item_metrics": list(scoring.item_metrics),
              "prompt_version": prompts.PROMPT_VERSION, "max_new_tokens": spec.new_tokens(),
              "metrics": metrics, "info": info, "device": str(device), "precision": label(precision),
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
    sizes = [max(s.limit, 1) * BENCHMARKS[s.benchmark].scoring.passes for s in specs]
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
    # Re-running with the same eval id (a retried job) replaces the earlier result.
    store.save_evals(
        [{"id": eval_id, "run_id": run_id, "model": model, "benchmark": benchmark, "mode": mode,
          "n_items": n, "score": score, "stderr": err, "created_at": created,
          "config": json.dumps(config, default=str)}],
        [{"eval_id": eval_id, "item_id": r["item_id"], "correct": float(r["correct"]),
          "prediction": r["prediction"], "target": r["target"],
          "extra": json.dumps(r["extra"], default=str)} for r in rows])


# ---- compare ----------------------------------------------------------------------------------
def eval_precision(config: str | None) -> str:
    """The precision an eval ran in, from its stored config (evals before the setting: fp32)."""
    return json.loads(config or "{}").get("precision", "fp32")


def compare(store, eval_id_a: str, eval_id_b: str, *, seed: int = 0, n_boot: int = 10_000,
            level: float = 0.95) -> dict:
    """Paired comparison of two evals on the items they share: delta = b - a."""
    evs = queries.evals_by_id(store, [eval_id_a, eval_id_b])
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
    pa, pb = eval_precision(a["config"]), eval_precision(b["config"])
    if pa != pb:
        raise LabError(f"Evals {eval_id_a} ({pa}) and {eval_id_b} ({pb}) ran in different precisions, "
                       "which shifts scores by itself; compare evals of the same precision.")
    ia, ib = queries.item_scores(store, eval_id_a), queries.item_scores(store, eval_id_b)
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
        "delta": summary["delta"], "stderr": nan_none(summary["stderr"]),
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
    parser.add_argument("--precision", choices=EVAL_PRECISIONS, default="no",
                        help="no = fp32 (default, comparable with lm-evaluation-harness); bf16 or "
                             "auto (bf16 where native) run under bf16 autocast, faster")
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
                    reference=args.reference or "", precision=args.precision)


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
