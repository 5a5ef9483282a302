"""Run by tests/test_distributed.py under `accelerate launch` with 2 CPU processes (gloo): the
data-parallel helpers of lab/distributed.py on values that differ by rank. Prints one JSON
line per rank."""
import json
import sys

import torch
from accelerate import Accelerator

from lab import distributed
from lab.errors import LabError

acc = Accelerator(**distributed.accelerator_kwargs())
r = acc.process_index
metrics = {"shared": 1.0 + r} | ({"rank0_only": 5.0} if r == 0 else {})
loss, tokens, flops, reduced = distributed.reduce_step(acc, 2.0 + 2 * r, 10 + r, 100.0 * (r + 1), metrics)
same = {"w": torch.arange(6, dtype=torch.float32)}
distributed.assert_same_on_all_ranks(acc, same, "identical state")
try:
    distributed.assert_same_on_all_ranks(acc, {"w": same["w"] + r * 1e-7}, "the EMA teacher")
    diverged = None
except LabError as e:
    diverged = str(e)
# one write per line: print() writes the text and the newline separately, so two ranks'
# lines could interleave on the shared pipe
sys.stdout.write(json.dumps({"rank": r, "world": acc.num_processes, "backend": torch.distributed.get_backend(),
                  "loss": loss, "tokens": tokens, "flops": flops, "metrics": reduced,
                  "seed": distributed.rank_seed(7, acc), "diverged": diverged,
                  "device": distributed.device_text(acc)}) + "\n")
sys.stdout.flush()
