"""fp32 against bf16 autocast: the same runs, step by step, through the real training loop.

    python -m bench.precision_agreement [--model smollm2-135m] [--objectives ntp,quiet-star,rlp,rpt]
                                        [--steps 50] [--batch 2] [--seq-len 64] [--lr 1e-5]
                                        [--param OBJ:KEY=VALUE ...] [--json PATH] [--threads N]

For each objective, lab.train.train runs twice on a fresh temporary data folder, with the same
settings, seed, batches (the loop's seeded batch order) and per-step RNG seeds; only
mixed_precision differs ("no", then "bf16"). The loss curves are read back from the runs'
logged metrics. Reported per objective: the mean and largest |loss_bf16 − loss_fp32| over the
steps, the same relative to the fp32 loss, the mean loss of the first and last 10 steps in each
precision, and (RL objectives) the mean reward in each. Sampling objectives diverge once a
single sampled token differs, so their curves are compared as trends (first/last-10 means),
not step by step.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OBJECTIVES = ("ntp", "quiet-star", "rlp", "rpt")


def run_one(objective: str, precision: str, args: argparse.Namespace, params: dict) -> dict[str, list[float]]:
    from lab.config import RunConfig
    from lab.store import Store
    from lab.train import train
    with tempfile.TemporaryDirectory(prefix="thoughtlab-agree-") as tmp:
        store = Store(Path(tmp)).init()
        cfg = RunConfig.from_dict(dict(
            objective=objective, model=args.model, corpus="builtin", corpus_docs=400, seq_len=args.seq_len,
            batch_size=args.batch, max_steps=args.steps, lr=args.lr, warmup_steps=0, seed=args.seed,
            n_samples=0, checkpoint_every=0, mixed_precision=precision, params=params)).validate()
        rid = store.create_run(config=cfg.to_dict())
        t0 = time.perf_counter()
        train(cfg, rid, store)
        wall = time.perf_counter() - t0
        m = store.metrics([rid])
        curves = {name: g.sort_values("step")["value"].tolist() for name, g in m.groupby("name")}
        curves["_wall_s"] = [wall]
        curves["_device"] = [store.get_run(rid)["device"]]
        return curves


def compare(a: list[float], b: list[float]) -> dict[str, float]:
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    diff = [abs(y - x) for x, y in pairs]
    rel = [abs(y - x) / max(abs(x), 1e-8) for x, y in pairs]
    k = min(10, len(pairs))
    return {"steps": len(pairs), "mean_abs_diff": statistics.fmean(diff), "max_abs_diff": max(diff),
            "mean_rel_diff": statistics.fmean(rel), "max_rel_diff": max(rel),
            "fp32_first": statistics.fmean(x for x, _ in pairs[:k]), "bf16_first": statistics.fmean(y for _, y in pairs[:k]),
            "fp32_last": statistics.fmean(x for x, _ in pairs[-k:]), "bf16_last": statistics.fmean(y for _, y in pairs[-k:])}


def parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    import yaml
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        obj, _, kv = item.partition(":")
        key, sep, value = kv.partition("=")
        if not sep or obj not in OBJECTIVES:
            raise SystemExit(f"--param {item!r}: use OBJECTIVE:KEY=VALUE, e.g. rlp:group_size=2")
        out.setdefault(obj, {})[key] = yaml.safe_load(value)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.precision_agreement", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--param", action="append", default=[], help="OBJECTIVE:KEY=VALUE (repeatable)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", help="also write the curves and figures to this file")
    args = p.parse_args(argv)
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    if any(o not in OBJECTIVES for o in objectives):
        p.error(f"--objectives: choose from {', '.join(OBJECTIVES)}")
    params = parse_params(args.param)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows, raw = [], {}
    for obj in objectives:
        curves = {prec: run_one(obj, prec, args, params.get(obj, {})) for prec in ("no", "bf16")}
        raw[obj] = curves
        row = {"objective": obj, **compare(curves["no"]["loss"], curves["bf16"]["loss"]),
               "wall_fp32_s": curves["no"]["_wall_s"][0], "wall_bf16_s": curves["bf16"]["_wall_s"][0],
               "device_bf16": curves["bf16"]["_device"][0]}
        for name in ("reward/mean",):
            if name in curves["no"]:
                row["reward_fp32"] = statistics.fmean(v for v in curves["no"][name] if v is not None)
                row["reward_bf16"] = statistics.fmean(v for v in curves["bf16"][name] if v is not None)
        rows.append(row)
        print(f"[agree] {obj}: mean |Δloss| {row['mean_abs_diff']:.4f}", file=sys.stderr, flush=True)
    lines = [f"{args.model}, batch {args.batch} × {args.seq_len}, lr {args.lr}, {args.steps} steps, seed "
             f"{args.seed}, params {json.dumps(params) if params else 'defaults'}; torch threads "
             f"{torch.get_num_threads()}.", "",
             "| objective | steps | mean abs Δloss | max abs Δloss | mean rel Δ | max rel Δ | "
             "fp32 first/last-10 loss | bf16 first/last-10 loss | reward fp32 / bf16 | wall fp32 / bf16 s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        reward = (f"{r['reward_fp32']:.3f} / {r['reward_bf16']:.3f}" if "reward_fp32" in r else "–")
        lines.append(f"| {r['objective']} | {r['steps']} | {r['mean_abs_diff']:.4f} | {r['max_abs_diff']:.4f} | "
                     f"{r['mean_rel_diff']:.2%} | {r['max_rel_diff']:.2%} | {r['fp32_first']:.4f} / "
                     f"{r['fp32_last']:.4f} | {r['bf16_first']:.4f} / {r['bf16_last']:.4f} | {reward} | "
                     f"{r['wall_fp32_s']:.0f} / {r['wall_bf16_s']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "curves": raw}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
