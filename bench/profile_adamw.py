"""AdamW step on SmolLM2-135M-sized fp32 parameters: torch's implementations side by side.

    .venv/bin/python -m bench.profile_adamw [--threads 1] [--repeats 3]

Parameters of SmolLM2-135M's shapes (30 layers: 4 attention and 3 MLP matrices, 2 norms
each; the tied 49152 × 576 embedding), random gradients; one warm-up step, then the median of
--repeats steps (process CPU time, steady on a loaded machine with one thread) for
foreach=False (torch's default on CPU), foreach=True and fused=True (lab.train.make_optimizer).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def smollm2_shapes() -> list[tuple[int, ...]]:
    h, inter, kv = 576, 1536, 192
    per_layer = [(h, h), (kv, h), (kv, h), (h, h), (inter, h), (inter, h), (h, inter), (h,), (h,)]
    return per_layer * 30 + [(49152, h), (h,)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_adamw", description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = [torch.nn.Parameter(torch.randn(s)) for s in smollm2_shapes()]
    print(f"{sum(x.numel() for x in params) / 1e6:.1f} M parameters in {len(params)} tensors, "
          f"{torch.get_num_threads()} thread(s), process CPU seconds")
    for kw in ({"foreach": False}, {"foreach": True}, {"fused": True}):
        opt = torch.optim.AdamW(params, lr=1e-5, **kw)
        for x in params:
            x.grad = torch.randn_like(x) * 1e-3
        opt.step()
        times = []
        for _ in range(args.repeats):
            t0 = time.process_time()
            opt.step()
            times.append(time.process_time() - t0)
        print(f"AdamW({kw}): {statistics.median(times):.3f} s per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
