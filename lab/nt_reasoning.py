"""Next-token reasoning accuracy (objectives.md §3, RPT's evaluation).

Held-out positions are split by a FIXED reference model's entropy (the same renormalised
top-k entropy RPT filters with): easy > 0.5, medium > 1.0, hard > 1.5 nats, nested (every
hard position is also medium and easy). Each level is its own uniform sample of
`n_positions` positions from its pool, so levels are unbiased even though they overlap;
a position drawn by several levels is evaluated once.

Per level: standard accuracy (the model's argmax on the plain text == x_t), reasoning
accuracy (RPT's byte-match reward of the boxed answer, averaged over G samples; greedy by
default) and the box-extraction failure rate.
"""
from __future__ import annotations

import json
import math
import random
import secrets
from pathlib import Path
from typing import Any, Sequence

import torch

from lab import limits, rl
from lab.errors import LabError
from lab.objectives.rpt import (answer_text, build_prompt, candidate_positions, context_text,
                                reasoning_text, rpt_reward, token_bytes, topk_entropy)
from lab.progress import Callback, Progress

BENCHMARK = "nt-reasoning"
LEVELS: tuple[tuple[str, float], ...] = (("easy", 0.5), ("medium", 1.0), ("hard", 1.5))


@torch.no_grad()
def _doc_logits(model, docs: list[list[int]], pad_id: int, batch: int = 8):
    """Yield (doc index, logits [len, V]) with right-padded batches (causal: padding after a
    document does not change its logits)."""
    device = next(model.parameters()).device
    for i in range(0, len(docs), batch):
        ids, mask = rl.right_pad(docs[i:i + batch], pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        for j, d in enumerate(docs[i:i + batch]):
            yield i + j, logits[j, :len(d)]


def evaluate_nt_reasoning(model_spec: str, ref_spec: str, docs: Sequence[str], *,
                          n_positions: int = 32, group_size: int = 1, seed: int = 0,
                          data_dir: str | Path | None = None, max_new_tokens: int = 64,
                          temperature: float = 0.0, top_k: int = 16, max_doc_tokens: int = 256,
                          min_context: int = 8, batch_prompts: int = 8,
                          trust_remote_code: bool = False, device: str | None = None,
                          progress_callback: Callback | None = None) -> dict[str, Any]:
    """Evaluate `model_spec` on held-out `docs`; positions split by `ref_spec`'s entropy.
    Returns {"levels": {level: metrics}, "items": [...], "config": {...}}."""
    from lab.models import load_model
    if n_positions < 1 or group_size < 1:
        raise LabError("n_positions and group_size must be at least 1.")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    lm = load_model(model_spec, data_dir, trust_remote_code=trust_remote_code)
    ref = lm if ref_spec == model_spec else load_model(ref_spec, data_dir,
                                                        trust_remote_code=trust_remote_code)
    tok = lm.tokenizer
    if ref.tokenizer.get_vocab() != tok.get_vocab():
        raise LabError(f"Reference model {ref_spec!r} uses a different tokenizer from {model_spec!r}; "
                       "the difficulty split needs the same tokens.")
    model = lm.model.to(dev).eval()
    ref_model = ref.model.to(dev).eval()
    pad = rl.pad_id_of(tok)

    ids = [tok.encode(d, add_special_tokens=False)[:max_doc_tokens] for d in docs]
    ids = [d for d in ids if len(d) > min_context]
    if not ids:
        raise LabError(f"No document has more than min_context={min_context} tokens.")
    tbytes = [token_bytes(tok, d) for d in ids]
    entropy: dict[tuple[int, int], float] = {}
    for k, logits in _doc_logits(ref_model, ids, pad):
        ent = topk_entropy(logits[:-1], top_k).tolist()
        for t in candidate_positions(tok, ids[k], tbytes[k], min_context):
            entropy[(k, t)] = ent[t - 1]

    rng = random.Random(seed)
    samples: dict[str, list[tuple[int, int]]] = {}
    for level, thr in LEVELS:
        pool = sorted(p for p, h in entropy.items() if h > thr)
        samples[level] = sorted(rng.sample(pool, min(n_positions, len(pool))))
    chosen = sorted({p for s in samples.values() for p in s})

    # Standard accuracy: the model's argmax on the plain text, for the documents drawn from.
    need = sorted({k for k, _ in chosen})
    argmax: dict[tuple[int, int], int] = {}
    for j, logits in _doc_logits(model, [ids[k] for k in need], pad):
        top = logits.argmax(-1).tolist()
        argmax.update({(k, t): top[t - 1] for k, t in chosen if k == need[j]})

    items: dict[tuple[int, int], dict[str, Any]] = {}
    # Counted from here: loading and the entropy passes would make the ETA too long.
    progress = Progress("next-token reasoning", total=max(1, len(chosen)), callback=progress_callback)
    for i in range(0, len(chosen), batch_prompts):
        part = chosen[i:i + batch_prompts]
        prompts = [build_prompt(tok, context_text(tbytes[k], t)) for k, t in part]
        ro = rl.sample_groups(model, prompts, group_size=group_size, max_new_tokens=max_new_tokens,
                              temperature=temperature, pad_id=pad, eos_ids=[tok.eos_token_id])
        for j, (k, t) in enumerate(part):
            scored, completions = [], []
            for g in range(group_size):
                text = tok.decode(ro.row_tokens(j * group_size + g), skip_special_tokens=True)
                completions.append(text)
                scored.append(rpt_reward(text, tbytes[k][t:]))
            target = answer_text(tbytes[k][t:])
            pred_std = tok.decode([argmax[(k, t)]])
            items[(k, t)] = {
                "item_id": f"doc{k}:t{t}", "entropy": entropy[(k, t)], "target": target,
                "standard_prediction": pred_std, "standard_correct": float(argmax[(k, t)] == ids[k][t]),
                "reasoning_correct": sum(r for r, _ in scored) / group_size,
                "box_fail": sum(p is None for _, p in scored) / group_size,
                "predictions": [p for _, p in scored], "reasoning": reasoning_text(completions[0]),
                "completion": completions[0],
                "context": context_text(tbytes[k], t)[-200:]}
        progress.update(min(i + batch_prompts, len(chosen)))
    progress.done()

    levels = {}
    for level, thr in LEVELS:
        rows = [items[p] for p in samples[level]]
        n = len(rows)
        mean = lambda key: sum(r[key] for r in rows) / n if n else float("nan")  # noqa: E731
        levels[level] = {"threshold": thr, "n": n, "pool": sum(h > thr for h in entropy.values()),
                         "standard_accuracy": mean("standard_correct"),
                         "reasoning_accuracy": mean("reasoning_correct"),
                         "box_failure_rate": mean("box_fail"), "mean_entropy": mean("entropy"),
                         "items": [r["item_id"] for r in rows]}
    config = {"model": model_spec, "ref_model": ref_spec, "n_positions": n_positions,
              "group_size": group_size, "seed": seed, "max_new_tokens": max_new_tokens,
              "temperature": temperature, "top_k": top_k, "entropy": "renormalised top-k",
              "max_doc_tokens": max_doc_tokens, "min_context": min_context, "n_docs": len(ids)}
    return {"levels": levels, "items": list(items.values()), "config": config}


def _stderr(p: float, n: int) -> float | None:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n and not math.isnan(p) else None


def write_nt_reasoning(store, result: dict[str, Any], *, run_id: str | None = None) -> list[str]:
    """Store a result: per level two `evals` rows (benchmark "nt-reasoning", mode
    "reasoning/<level>" and "standard/<level>") and their items in `eval_items`, in one
    transaction. Returns the eval ids."""
    from lab.store import now
    cfg = result["config"]
    if run_id is None and str(cfg["model"]).startswith("run:"):
        run_id = str(cfg["model"])[4:].partition("@")[0]
    by_id = {it["item_id"]: it for it in result["items"]}
    evals, eval_items = [], []
    for level, stats in result["levels"].items():
        for kind in ("reasoning", "standard"):
            eid = secrets.token_hex(8)
            score = stats[f"{kind}_accuracy"]
            extra_cfg = {**cfg, "level": level, "threshold": stats["threshold"], "pool": stats["pool"],
                         "box_failure_rate": stats["box_failure_rate"]}
            evals.append({"id": eid, "run_id": run_id, "model": cfg["model"], "benchmark": BENCHMARK,
                          "mode": f"{kind}/{level}", "n_items": stats["n"],
                          "score": None if math.isnan(score) else score,
                          "stderr": _stderr(score, stats["n"]), "created_at": now(),
                          "config": json.dumps(extra_cfg, sort_keys=True)})
            for iid in stats["items"]:
                it = by_id[iid]
                if kind == "reasoning":
                    pred, extra = (it["predictions"][0] if it["predictions"] else None), {
                        "entropy": it["entropy"], "box_fail": it["box_fail"],
                        "predictions": it["predictions"], "reasoning": it["reasoning"],
                        "completion": it["completion"], "context": it["context"]}
                else:
                    pred, extra = it["standard_prediction"], {"entropy": it["entropy"],
                                                              "context": it["context"]}
                eval_items.append({"eval_id": eid, "item_id": iid, "correct": it[f"{kind}_correct"],
                                   "prediction": pred, "target": it["target"], "extra": json.dumps(extra)})
    store.save_evals(evals, eval_items)
    return [e["id"] for e in evals]


# ---- as a background job -----------------------------------------------------------------
JOB_DEFAULTS = {"reference": "", "n_positions": 32, "group_size": 1, "max_new_tokens": 64,
                "seed": 0, "n_docs": 40}


def job_config(model: str, *, reference: str = "", **settings: Any) -> dict[str, Any]:
    """The `runs.config` of a next-token-reasoning job (kind 'eval', benchmark 'nt-reasoning').
    Held-out text: the built-in generator's `test` split (never seen in training)."""
    unknown = set(settings) - set(JOB_DEFAULTS)
    if unknown:
        raise LabError(f"Unknown next-token reasoning setting(s): {', '.join(sorted(unknown))}.")
    cfg = {**JOB_DEFAULTS, **settings, "model": model, "reference": reference or model,
           "benchmark": BENCHMARK}
    bad = limits.value_problems(settings, JOB_DEFAULTS)    # whole numbers in range, seed included
    if bad:
        raise LabError("Invalid next-token reasoning settings:\n- " + "\n- ".join(bad.values()))
    for key in ("n_positions", "group_size", "max_new_tokens", "n_docs", "seed"):
        if int(cfg[key]) < (0 if key == "seed" else 1):
            raise LabError(f"{key} must be at least {0 if key == 'seed' else 1} (got {cfg[key]}).")
    if cfg["reference"].startswith("run:") and cfg["reference"] == model:
        raise LabError("The reference model must be fixed (e.g. the base model), not the checkpoint "
                       "being evaluated, so base and trained are split into the same difficulty levels.")
    return cfg


def run_job(store, cfg: dict[str, Any], progress_callback=None) -> list[str]:
    """Evaluate and store (called by jobs/worker.py)."""
    from lab.mathgen import problems
    docs = [p.text for p in problems(int(cfg["n_docs"]), "test", int(cfg["seed"]))]
    cfg = job_config(cfg["model"], **{k: cfg[k] for k in ("reference", *JOB_DEFAULTS) if k in cfg})
    result = evaluate_nt_reasoning(
        cfg["model"], cfg["reference"], docs, n_positions=int(cfg["n_positions"]),
        group_size=int(cfg["group_size"]), seed=int(cfg["seed"]), data_dir=store.data_dir,
        max_new_tokens=int(cfg["max_new_tokens"]),
        progress_callback=progress_callback)
    return write_nt_reasoning(store, result)
