"""Before/after of the hot paths that profiling found on CPU:

1. sampling one token per row over the 49k vocabulary: torch.multinomial (before) vs the
   inverse-CDF sampler in lab/sampling.py (after), at the batch shapes a Quiet-STaR thought
   pass (B·P·n_pos rows) and an RLP/RPT rollout step (B·G rows) use;
2. NTP's loss + entropy statistics: cross_entropy plus a separate entropy pass (before) vs one
   shared log-softmax (lab.entropy.nll_and_entropy, after).

    .venv/bin/python -m bench.profile_sampling [--threads 1] [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lab.entropy import nll_and_entropy, token_entropy
from lab.sampling import sample_rows

V = 49152


def timeit(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}\n")
    print("| hot path | shape | before (ms) | after (ms) | speed-up |\n|---|---|---|---|---|")
    for rows, what in ((2 * 2 * 60, "Quiet-STaR thought pass, B2·P2·60 positions"),
                       (8, "RLP/RPT rollout step, B2·G4")):
        probs = torch.softmax(torch.randn(rows, V), -1)
        before = timeit(lambda: torch.multinomial(probs, 1), args.repeats)
        after = timeit(lambda: sample_rows(probs), args.repeats)
        print(f"| sample 1 token/row ({what}) | {rows}×{V} | {before * 1e3:.2f} | {after * 1e3:.2f} | "
              f"{before / after:.1f}× |")
    logits = torch.randn(8, 255, V, requires_grad=True)
    targets = torch.randint(0, V, (8, 255))

    def separate():
        nll = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
        with torch.no_grad():
            token_entropy(logits)
        return nll

    before = timeit(separate, args.repeats)
    after = timeit(lambda: nll_and_entropy(logits, targets), args.repeats)
    print(f"| NTP loss + entropy stats | 8×255×{V} | {before * 1e3:.0f} | {after * 1e3:.0f} | "
          f"{before / after:.1f}× |")


if __name__ == "__main__":
    main()
