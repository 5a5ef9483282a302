"""What the training loop needs to be correct under data parallelism (several processes, one
rank each, launched by jobs/topology.py): reduced metrics, per-rank randomness, a readable
device label, and a check that state meant to be identical on every rank is.

With one process every function here is the identity (or a no-op), so the single-process path
is unchanged.
"""
from __future__ import annotations

import atexit
import hashlib

import torch

from lab import precision

RANK_SEED_STRIDE = 1_000_003     # rank r draws from seed + r * stride: rank 0 keeps the 1-process seed


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def accelerator_kwargs() -> dict:
    """`Accelerator(**...)` for this process: `cpu=True` without CUDA, so several CPU ranks
    started by accelerate's multi-process launcher join one gloo group (without it accelerate
    sees no GPU and runs each process alone). CUDA ranks use NCCL."""
    # A gloo group still alive while the interpreter shuts down can abort the process
    # ("terminate called without an active exception", SIGABRT) after a run that succeeded.
    atexit.register(_destroy_process_group)   # registering twice is harmless: it checks first
    return {"cpu": not torch.cuda.is_available()}


def rank_seed(seed: int, acc) -> int:
    """A seed of its own for each rank (thought sampling, positions): different windows should
    not also draw the same random numbers. Reproducible on resume like the 1-process seed."""
    return seed + acc.process_index * RANK_SEED_STRIDE


def reduce_step(acc, loss: float, tokens: int, flops: float,
                metrics: dict[str, float]) -> tuple[float, int, float, dict[str, float]]:
    """One optimizer step's figures over every rank: the mean loss and mean objective metrics
    (every rank has the same batch shape), summed tokens and FLOPs. Called on every rank.
    A metric missing on some rank (an objective that logs a value only when it has one) is
    averaged over the ranks that have it."""
    if acc.num_processes == 1:
        return loss, tokens, flops, metrics
    names = sorted(set().union(*_gather_objects(acc, sorted(metrics))))
    values = [loss, float(tokens), flops] + [metrics.get(k, 0.0) for k in names]
    present = [1.0, 1.0, 1.0] + [1.0 if k in metrics else 0.0 for k in names]
    t = torch.tensor([values, present], dtype=torch.float64, device=acc.device)
    t = acc.reduce(t, reduction="sum")
    sums, counts = t[0].tolist(), t[1].tolist()
    reduced = {k: sums[3 + i] / counts[3 + i] for i, k in enumerate(names) if counts[3 + i]}
    return sums[0] / counts[0], int(round(sums[1])), sums[2], reduced


def _gather_objects(acc, obj) -> list:
    from accelerate.utils import gather_object
    return gather_object([obj]) if acc.num_processes > 1 else [obj]


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A checksum of named tensors' exact values (bytes), to compare them across ranks."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def assert_same_on_all_ranks(acc, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Raise when `tensors` differ between ranks (e.g. RLP's EMA teacher, which each rank
    updates from its own copy of the weights: if the weights ever diverged, so would it and
    each rank's reward would be computed against a different teacher). Called on every rank."""
    if acc.num_processes == 1 or not tensors:
        return
    digests = _gather_objects(acc, tensors_digest(tensors))
    if len(set(digests)) == 1 and acc.is_main_process:
        print(f"[train] {what} identical on all {acc.num_processes} processes "
              f"(sha256 {digests[0][:12]})", flush=True)
    if len(set(digests)) > 1:
        from lab.errors import LabError
        raise LabError(f"{what} differs between the {acc.num_processes} processes: data-parallel "
                       "ranks must hold identical copies. This is a bug in the lab; the job log "
                       "has the details.")


def fsdp_full_weights(acc, model) -> dict[str, torch.Tensor] | None:
    """Under FSDP, the model's full (unsharded) state dict, gathered on rank 0 (every rank
    must call this: the gather is collective); None otherwise. Checkpoints then save it as a
    plain safetensors folder."""
    from accelerate.utils import DistributedType
    if acc.distributed_type != DistributedType.FSDP:
        return None
    return acc.get_state_dict(model)


def device_text(acc) -> str:
    """The run's `device`: hardware, process count and backend, e.g.
    "cpu × 2 processes (gloo, 1 thread each)" or "4x NVIDIA H200 (nccl, bf16)"."""
    n = acc.num_processes
    how = [torch.distributed.get_backend()] if n > 1 and torch.distributed.is_initialized() else []
    how += ["fsdp"] if acc.distributed_type.name == "FSDP" else []
    if acc.device.type == "cuda":
        return f"{n}x {torch.cuda.get_device_name(acc.device)} ({', '.join(how + [precision.label(acc.mixed_precision)])})"
    threads = torch.get_num_threads()
    how.append(f"{threads} thread{'s' if threads > 1 else ''}" + (" each" if n > 1 else ""))
    how.append(precision.label(acc.mixed_precision))
    return f"cpu × {n} process{'es' if n > 1 else ''} ({', '.join(how)})"
