"""What Quiet-STaR costs when only the forking tokens think (issue 12), as a ratio to NTP on the
same batch, at thought shares 1.0, 0.5 and 0.2, with the theoretical ratio beside the measured one.

    python -m bench.forking_cost [--model tiny-random] [--shares 1.0,0.5,0.2] [--batch 2]
                                 [--seq-len 64] [--steps 3] [--threads N] [--params-json '{...}']

What is measured
- One batch: the step-0 windows of a training run on the built-in corpus (bench.benchmark's
  make_batch), the same tensor for every case.
- One "step" = objective.step(batch) + loss.backward() (no optimizer: its cost does not depend
  on the objective), timed with perf_counter. Share 1.0 is thought_positions=all; the others
  thought_positions=forking with that thought_share.
- NTP bracketing: every Quiet-STaR step runs between two NTP steps on the same model and batch
  (N X N X … N); a step's ratio is t(X) / mean(t(N before), t(N after)), and the table gives
  the median over the measured steps, so machine load hits both sides alike. One warm-up round
  is not counted.
- Theoretical ratio: StepOutput.flops of the step over NTP's (lab/flops.py: pass 0 as an NTP
  step plus each thought pass over B·P·M slots at its context; M counts the padding slots of
  rows that chose fewer positions), and the ideal 1 + share·(ratio at 1.0 − 1) (no padding, no
  per-pass overhead).
- `slot use` = real thought slots / B·M (1.0 = no padding).

On a tiny model every forward costs mostly fixed overhead (kernel launches, Python), which does
not shrink with the share; the FLOPs ratio is what a larger model approaches.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time


def measure(model_spec: str, shares: list[float], batch: int, seq_len: int, steps: int,
            params: dict, seed: int = 0) -> list[dict]:
    """One row per share: measured and theoretical ratios to NTP on the same batch."""
    import torch

    from bench.benchmark import make_batch
    from lab.config import RunConfig
    from lab.models import load_model
    from lab.objectives.ntp import NTP
    from lab.objectives.quiet_star import QuietSTaR, QuietSTaRParams

    lm = load_model(model_spec, seed=seed)
    model, tok = lm.model, lm.tokenizer
    ids, _ = make_batch(model_spec, batch, seq_len, seed, corpus_docs=max(64, batch * 8))
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    cfg = RunConfig(objective="quiet-star", model=model_spec, seq_len=seq_len, batch_size=batch)
    device = torch.device("cpu")
    ntp = NTP(model, tok, NTP.Params(), cfg, device)

    def timed(obj) -> tuple[float, dict, float]:
        t0 = time.perf_counter()
        out = obj.step(data, record=0)
        out.loss.backward()
        took = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)
        return took, out.metrics, out.flops

    rows = []
    for share in shares:
        mode = dict(thought_positions="all") if share >= 1 else dict(thought_positions="forking",
                                                                      thought_share=share)
        qs = QuietSTaR(model, tok, QuietSTaRParams(**{**params, **mode}), cfg, device)
        ratios, metrics, flops_x, flops_n = [], {}, 0.0, 0.0
        t_before, _, flops_n = timed(ntp)
        for i in range(steps + 1):                              # round 0: warm-up
            t_x, metrics, flops_x = timed(qs)
            t_after, _, _ = timed(ntp)
            if i:
                ratios.append(t_x / ((t_before + t_after) / 2))
            t_before = t_after
        rows.append({"share": share, "mode": mode["thought_positions"],
                     "measured_ratio": statistics.median(ratios), "flops_ratio": flops_x / flops_n,
                     "thought_share": metrics["thought/share"],
                     "slot_use": metrics["thought/slot_use"]})
    full = next((r["flops_ratio"] for r in rows if r["share"] >= 1), None)
    for r in rows:
        r["ideal_ratio"] = None if full is None else 1 + r["share"] * (full - 1)
    return rows


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    def f(x):
        return "–" if x is None else f"{x:.2f}"
    out = [f"Quiet-STaR cost vs NTP on the same batch: {args.model}, batch {args.batch} × "
           f"{args.seq_len} tokens, params {json.dumps(args.params)}, median of {args.steps} steps",
           "", "| share | positions | measured ratio | FLOPs ratio | ideal ratio | thinking share | slot use |",
           "|---|---|---|---|---|---|---|"]
    out += [f"| {r['share']:.2f} | {r['mode']} | {f(r['measured_ratio'])} | {f(r['flops_ratio'])} | "
            f"{f(r['ideal_ratio'])} | {r['thought_share']:.3f} | {r['slot_use']:.2f} |" for r in rows]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-random", help="model preset or folder (default tiny-random)")
    ap.add_argument("--shares", default="1.0,0.5,0.2", help="thought shares, comma-separated")
    ap.add_argument("--batch", type=int, default=2, help="sequences per batch (default 2)")
    ap.add_argument("--seq-len", type=int, default=64, help="tokens per sequence (default 64)")
    ap.add_argument("--steps", type=int, default=3, help="measured steps per share (default 3)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--params-json", default="{}",
                    help="Quiet-STaR params as JSON (default: the objective's own, 12/4/2)")
    ap.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    args.params = json.loads(args.params_json)
    shares = [float(s) for s in args.shares.split(",") if s.strip()]
    if not shares or any(not 0 < s <= 1 for s in shares):
        raise SystemExit(f"--shares must be numbers in (0, 1] (got {args.shares!r})")
    rows = measure(args.model, shares, args.batch, args.seq_len, args.steps, args.params)
    print(markdown(rows, args))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": {k: v for k, v in vars(args).items()}, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
