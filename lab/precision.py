"""Which precision a run computes in: `auto` picks bf16 where the hardware runs it fast.

bf16 here always means *autocast*: the master weights, the gradients and the AdamW state stay
fp32, and only the matmuls (and the ops autocast lists) run in bf16. `auto` resolves to bf16 on
GPUs that support it (Ampere and later) and on CPUs with native bf16 instructions (AMX-bf16 or
AVX512-bf16, where oneDNN's bf16 matmuls are several times faster than fp32), and to fp32
("no") elsewhere: without those instructions bf16 is emulated and slower than fp32.
(torch is imported lazily: lab.config, which the web pages import, uses PRECISIONS.)
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import ContextManager

from lab.errors import LabError

PRECISIONS = ("auto", "no", "bf16", "fp16")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 instruction flags this CPU reports (Linux /proc/cpuinfo; else oneDNN)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return tuple(f for f in CPU_BF16_FLAGS if f in flags)
    except OSError:
        pass
    import torch
    try:   # not Linux: ask oneDNN (true on any AVX512 CPU, so less exact than the flags)
        return ("mkldnn_bf16",) if torch.ops.mkldnn._is_mkldnn_bf16_supported() else ()
    except (AttributeError, RuntimeError):
        return ()


def cuda_has_bf16() -> bool:
    import torch
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve(requested: str, device_type: str) -> str:
    """The precision to run with ("no", "bf16" or "fp16") for `requested` on `device_type`
    ("cpu" or "cuda"); `auto` picks bf16 where it is native, else fp32."""
    if requested not in PRECISIONS:
        raise LabError(f"mixed_precision must be one of {PRECISIONS} (got {requested!r})")
    if requested == "auto":
        native = cuda_has_bf16() if device_type == "cuda" else bool(cpu_bf16_flags())
        return "bf16" if native else "no"
    if requested == "fp16" and device_type != "cuda":
        raise LabError("fp16 mixed precision needs a GPU; use 'auto', 'bf16' or 'no' on CPU.")
    return requested


def label(precision: str) -> str:
    """How a run's record names its precision (weights stay fp32 under autocast)."""
    return {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[precision]


def autocast(device_type: str, precision: str) -> ContextManager:
    """The autocast context for a resolved precision (a no-op for fp32). For code that runs the
    model outside the accelerate loop: benchmarks, evaluation, rollouts."""
    import torch
    if precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)
