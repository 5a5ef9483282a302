"""Token sampling shared by every objective that generates (Quiet-STaR thoughts, RLP/RPT
rollouts, the evaluation engine's sampled modes): the inverse-CDF row sampler, the next-token
draw of the KV-cached sampler (lab/rl.py) and its stop-string prefilter."""
from __future__ import annotations

import functools

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


def sample_next(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row; temperature 0 is greedy. Returns (token, its log-prob).
    One softmax over the vocabulary: the log-prob is that of the drawn token only (a full
    log-softmax and its exp were two more vocabulary-wide passes per generated token)."""
    logits = logits.float()
    if temperature <= 0:
        tok = logits.argmax(-1)
        lse = torch.logsumexp(logits, -1)
        return tok, logits.gather(-1, tok[:, None])[:, 0] - lse
    probs = torch.softmax(logits / temperature, -1)
    tok = sample_rows(probs)     # inverse CDF, much cheaper than torch.multinomial
    return tok, probs.gather(-1, tok[:, None])[:, 0].log()


@functools.lru_cache(maxsize=8)
def stop_token_mask(tokenizer, stop_strings: tuple[str, ...]) -> torch.Tensor:
    """[V] bool: the tokens whose text holds the last character of a stop string, the only
    ones that can complete it (decoding every row's tail at every step was the sampler's
    main Python cost). Stop strings ending in a non-ASCII character, which a token may hold
    only in part, make every token a candidate."""
    n = len(tokenizer)
    if any(not s or not s[-1].isascii() for s in stop_strings):
        return torch.ones(n, dtype=torch.bool)
    ends = {s[-1] for s in stop_strings}
    texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False)
    return torch.tensor([any(c in t for c in ends) for t in texts], dtype=torch.bool)
