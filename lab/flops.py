"""Training-compute accounting, so objectives can be compared at matched FLOPs.

Forward FLOPs per token ≈ 2·N_matmul + 2·n_layers·ctx·hidden (Kaplan et al. 2020, attention
scores and values counted once each); a backward pass costs twice the forward. Rollout
tokens generated without gradient count as forward FLOPs at their context length.
"""
from __future__ import annotations


def forward_flops(desc: dict, n_tokens: int, ctx: int) -> float:
    per_token = 2.0 * desc["matmul_params"] + 2.0 * desc["n_layers"] * ctx * desc["hidden"]
    return per_token * float(n_tokens)


def train_flops(desc: dict, n_tokens: int, ctx: int) -> float:
    """Forward + backward over n_tokens tokens of context ctx."""
    return 3.0 * forward_flops(desc, n_tokens, ctx)
