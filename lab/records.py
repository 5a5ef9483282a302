"""Per-token sample records (table `tokens`): what the Forking-tokens and Thoughts pages show.

Convention: the row for position t describes token x_t and the distribution that predicted
it, p(· | x_<t): its entropy, the NLL and probability of x_t. Position 0 has no prediction.
`extra` also holds `top` (the TOP_K likeliest tokens with their probabilities) and `rank`
(x_t's rank in that distribution, 1 = the model's first guess), for the pages' hover.
"""
from __future__ import annotations

from typing import Any

import torch

from lab.entropy import token_entropy

# Display share: the records mark the top 20 % entropy tokens of each sequence as `forking`
# for the pages. Not the training share (RunConfig.rho, over the micro-batch) nor Quiet-STaR's
# thought_share or RLP's position_share.
DISPLAY_SHARE = 0.2


TOP_K = 5


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    """Each token's own text (leading spaces kept), for display."""
    return [token_text(tokenizer, i) for i in ids]


def token_text(tokenizer, token_id: int) -> str:
    """One token's text (leading spaces kept), for display."""
    return tokenizer.decode([token_id], clean_up_tokenization_spaces=False)


def sequence_records(tokenizer, ids: torch.Tensor, logits: torch.Tensor, *, sample: int,
                     display_share: float = DISPLAY_SHARE, extra: list[dict] | None = None) -> list[dict[str, Any]]:
    """Rows for one sequence. ids [T], logits [T, V] where logits[t] predicts ids[t+1].
    `forking` marks the top display_share entropy tokens of this sequence (a view of the text,
    not RunConfig.rho, the training share over the micro-batch)."""
    ids = ids.detach().cpu()
    logits = logits.detach().float().cpu()
    ent = token_entropy(logits[:-1])
    logp_all = torch.log_softmax(logits[:-1], dim=-1)
    logp = logp_all.gather(-1, ids[1:, None])[:, 0]
    top_lp, top_ids = logp_all.topk(min(TOP_K, logp_all.shape[-1]), dim=-1) if ent.numel() else (None, None)
    ranks = (logp_all > logp[:, None]).sum(-1) + 1
    k = max(1, int(round(display_share * ent.numel()))) if ent.numel() else 0
    threshold = torch.topk(ent, k).values.min().item() if k else float("inf")
    texts = token_texts(tokenizer, ids.tolist())
    rows = []
    for t, (tid, text) in enumerate(zip(ids.tolist(), texts)):
        row: dict[str, Any] = {"sample": sample, "position": t, "token_id": tid, "token": text,
                               "entropy": None, "nll": None, "prob": None, "forking": False}
        if t > 0:
            e, lp = ent[t - 1].item(), logp[t - 1].item()
            row.update(entropy=e, nll=-lp, prob=float(torch.tensor(lp).exp()),
                       forking=e >= threshold)
            alts = token_texts(tokenizer, top_ids[t - 1].tolist())
            row["extra"] = {"top": [[a, round(float(p), 5)] for a, p in zip(alts, top_lp[t - 1].exp().tolist())],
                            "rank": int(ranks[t - 1])}
        if extra and t < len(extra) and extra[t]:
            row["extra"] = {**(row.get("extra") or {}), **extra[t]}
        rows.append(row)
    return rows
