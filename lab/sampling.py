"""Token sampling shared by every objective that generates (Quiet-STaR thoughts, RLP/RPT
rollouts, the evaluation engine's sampled modes)."""
from __future__ import annotations

import torch


def uniform(shape: tuple[int, ...], device: torch.device,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """U[0, 1) draws from `generator` on its own device (callers may pass a CPU generator for
    a GPU model), moved to `device`."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, device=where, generator=generator).to(device)


def sample_rows(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of probs [N, V] by inverse CDF: a single uniform per row.
    torch.multinomial draws V exponentials per row for one sample, which made it the most
    expensive op of a tiny-model step on CPU (bench/profile_sampling.py measures both).
    right=True never lands on a zero-probability token."""
    cdf = probs.float().cumsum(-1)
    u = uniform((cdf.shape[0], 1), cdf.device, generator) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True)[:, 0].clamp_(max=cdf.shape[-1] - 1)
