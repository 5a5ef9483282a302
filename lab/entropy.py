"""Token entropy and the forking-token mask (objectives.md §4), shared by every objective."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOW_ENTROPY = 0.01  # nats: "half of all tokens had entropy < 0.01" in the 80/20 paper


def token_entropy(logits: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Entropy in nats over the full vocabulary, per position: logits [..., V] -> [...].
    Computed in float32 and in chunks so a [B, T, 49k] tensor is not copied whole."""
    flat = logits.reshape(-1, logits.shape[-1])
    out = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)
    for i in range(0, flat.shape[0], chunk):
        lp = F.log_softmax(flat[i:i + chunk].float(), dim=-1)
        out[i:i + chunk] = entropy_from_logp(lp)
    return out.reshape(logits.shape[:-1])


def entropy_stats(entropy: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, float]:
    """Mean, 80th percentile and share below 0.01 nats of the valid positions."""
    e = entropy.detach().float()
    e = e[valid.bool()] if valid is not None else e.reshape(-1)
    if e.numel() == 0:
        return {}
    return {"entropy/mean": e.mean().item(),
            "entropy/p80": torch.quantile(e, 0.8).item() if e.numel() > 1 else e.item(),
            "entropy/share_below_0.01": (e < LOW_ENTROPY).float().mean().item()}


def forking_mask(entropy: torch.Tensor, valid: torch.Tensor, rho: float) -> torch.Tensor:
    """Boolean mask of the top-rho highest-entropy valid positions, chosen over the whole
    (micro-)batch rather than per sequence (objectives.md §4). rho = 1 keeps every valid one."""
    valid = valid.bool()
    if rho >= 1.0:
        return valid.clone()
    n_valid = int(valid.sum())
    k = max(1, int(round(rho * n_valid))) if n_valid else 0
    mask = torch.zeros_like(valid)
    if k == 0:
        return mask
    scores = entropy.detach().float().masked_fill(~valid, float("-inf")).reshape(-1)
    idx = torch.topk(scores, k).indices
    mask.view(-1)[idx] = True
    return mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over selected positions, normalised by the number selected (not by all tokens,
    which would silently shrink the step by 1/rho)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def nll_and_entropy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position NLL of `targets` (differentiable) and entropy (detached) from ONE
    log-softmax over the full vocabulary, instead of one for the loss and one for the stats."""
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        ent = entropy_from_logp(logp.detach())
    return nll, ent


def entropy_from_logp(lp: torch.Tensor) -> torch.Tensor:
    """−Σ p log p from log-probs [..., V], with 0·log 0 = 0: −inf log-probs (masked logits)
    are clamped to the lowest finite value, so their p = 0 term is 0 rather than NaN. Three
    passes over the vocabulary (a `where` with a zeros tensor took five); a plain product,
    not a dot product, which autocast would run in bf16."""
    return -(lp.exp() * lp.clamp(min=torch.finfo(lp.dtype).min)).sum(-1)
