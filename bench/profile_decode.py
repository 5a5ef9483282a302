"""The KV-cached sampler (lab.rl.sample_groups) on SmolLM2-135M in three precisions: fp32,
bf16 autocast over the fp32 weights (what a training step's rollouts use), and a bf16 copy of
the weights (no per-op casts). 4 prompts of 32 tokens, 16 new tokens each, one thread;
process CPU seconds, mean of 2 runs after a warm-up.

    .venv/bin/python -m bench.profile_decode
"""
from __future__ import annotations

import copy
import time

import torch

from lab import rl
from lab.models import load_model


def main() -> int:
    torch.set_num_threads(1)
    m32 = load_model("smollm2-135m", seed=0).model.eval()
    m16 = copy.deepcopy(m32).to(torch.bfloat16)
    prompts = [[1 + i + j for j in range(32)] for i in range(4)]

    def run(model, autocast: bool) -> None:
        torch.manual_seed(0)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            rl.sample_groups(model, prompts, group_size=1, max_new_tokens=16, temperature=1.0, pad_id=0)

    for name, model, autocast in (("fp32", m32, False), ("bf16 autocast", m32, True), ("bf16 weights", m16, False)):
        run(model, autocast)
        t0 = time.process_time()
        run(model, autocast)
        run(model, autocast)
        print(f"{name}: {2 * 64 / (time.process_time() - t0):.1f} tok/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
