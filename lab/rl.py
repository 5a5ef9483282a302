"""Shared reinforcement-learning pieces for the objectives that sample thoughts (RLP, RPT).

- `sample_groups`: G completions per prompt in one batched, KV-cached sampling loop
  (left-padded prompts; a finished row keeps feeding masked pad tokens, so the batch stays
  rectangular). It records the sampler's log-probs and can keep its cache so that a few
  teacher-forced tokens can be scored after each completion (`score_tails`) without a
  second forward over prompt + completion.
- `policy_logprobs`: the gradient-bearing forward over prompt + completion that gives the
  per-token log-probs of the sampled tokens under the current policy.
- Advantages: `rloo_advantages` (RLP) and `group_advantages` (GRPO, RPT, with the
  dynamic-sampling drop of all-equal groups).
- `clipped_surrogate`: the PPO/GRPO clipped objective, averaged per sequence then over
  sequences, with an optional k3 KL penalty.

Conventions: completions are [N, L] with N = n_prompts * G, rows of one group adjacent
(row = prompt_index * G + j). Log-probs are of the temperature-scaled policy, i.e. of the
distribution the tokens were sampled from.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from lab import profiling
from lab.entropy import entropy_from_logp
from lab.flops import forward_flops
from lab.records import sequence_records
from lab.progress import step_note
from lab.sampling import sample_next, stop_token_mask


# ---- small helpers -----------------------------------------------------------------

def left_pad(seqs: Sequence[Sequence[int]], pad_id: int,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (ids [N, P], mask [N, P]) padded on the left (for batched generation)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (ids [N, L], mask [N, L]) padded on the right."""
    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids.to(device), mask.to(device)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip masked (pad / hole) tokens, so a padded row reads as contiguous."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Rollouts and rewards run without dropout, then the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def frozen_copy(model: torch.nn.Module, device: torch.device | str | None = None) -> torch.nn.Module:
    """A no-grad, eval-mode deep copy (EMA teacher, frozen initial model, RPT proxy), on
    `device` (objectives are built before accelerate moves the model, so say where)."""
    clone = copy.deepcopy(model)
    clone.eval()
    clone.requires_grad_(False)
    return clone.to(device) if device is not None else clone


def sample_positions(lo: int, hi: int, k: int) -> list[int]:
    """k distinct positions in [lo, hi), sorted, from torch's global RNG (which the training
    loop seeds per step, so a resumed run draws the same positions)."""
    n = max(0, hi - lo)
    return sorted((torch.randperm(n)[:min(k, n)] + lo).tolist())


def pad_id_of(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


# ---- sampling ------------------------------------------------------------------------

@dataclass
class Rollouts:
    prompt_ids: torch.Tensor        # [N, P] left-padded
    prompt_mask: torch.Tensor       # [N, P]
    tokens: torch.Tensor            # [N, L] sampled tokens, pad after a row ends
    mask: torch.Tensor              # [N, L] bool: real sampled tokens
    sampler_logp: torch.Tensor      # [N, L] log-prob of each token under the sampler (0 on pad)
    stop: list[str]                 # per row: "stop" (a stop string), "eos" or "length"
    group_size: int
    # Kept only with keep_cache=True: the cache after every real token, the attention mask
    # it was built with, the next position id and the logits after each row's last token.
    cache: Any = None
    cache_mask: torch.Tensor | None = None
    next_pos: torch.Tensor | None = None
    last_logits: torch.Tensor | None = None

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1)

    def row_tokens(self, i: int) -> list[int]:
        return self.tokens[i][self.mask[i]].tolist()

    def texts(self, tokenizer) -> list[str]:
        return [tokenizer.decode(self.row_tokens(i), skip_special_tokens=False)
                for i in range(self.tokens.shape[0])]

    def drop_cache(self) -> None:
        self.cache = self.cache_mask = self.next_pos = self.last_logits = None


@profiling.timed("rl.sample")
@torch.no_grad()
def sample_groups(model: torch.nn.Module, prompts: Sequence[Sequence[int]], *, group_size: int,
                  max_new_tokens: int, temperature: float, pad_id: int,
                  eos_ids: Sequence[int] = (), stop_strings: Sequence[str] = (),
                  tokenizer=None, keep_cache: bool = False) -> Rollouts:
    """Sample `group_size` completions for every prompt in one batched KV-cached loop.

    A row ends after an EOS token, or after the token that completes one of `stop_strings`
    (that token is kept), or at `max_new_tokens`. With keep_cache=True the cache is extended
    with every row's last token so `score_tails` can continue from it.
    """
    device = next(model.parameters()).device
    ids, pmask = left_pad(prompts, pad_id, device)
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=device)
    stop_window = max((len(s) for s in stop_strings), default=0) + 2  # tokens to decode
    could_stop = (stop_token_mask(tokenizer, tuple(stop_strings)).to(device)
                  if stop_strings and tokenizer is not None else None)

    with eval_mode(model):
        # Prefill each prompt once, then copy its cache to the G rows of its group.
        out = model(input_ids=ids, attention_mask=pmask, position_ids=positions_from_mask(pmask),
                    use_cache=True, logits_to_keep=1)
        cache, logits = out.past_key_values, out.logits[:, -1]
        if could_stop is not None and could_stop.numel() < logits.shape[-1]:   # padded vocabulary
            could_stop = F.pad(could_stop, (0, logits.shape[-1] - could_stop.numel()), value=True)
        if group_size > 1:
            cache.batch_repeat_interleave(group_size)
            ids, pmask, logits = (x.repeat_interleave(group_size, 0) for x in (ids, pmask, logits))
        n = ids.shape[0]
        attn = pmask
        next_pos = pmask.sum(-1)
        last_logits = logits.float().clone() if keep_cache else None
        done = torch.zeros(n, dtype=torch.bool, device=device)
        stop = ["length"] * n
        toks, lps, real = [], [], []
        for k in range(max_new_tokens):
            step_note(f"sampling: token {k + 1}/{max_new_tokens} of {n} rollouts")
            tok, lp = sample_next(logits, temperature)
            live = ~done
            tok = torch.where(live, tok, torch.full_like(tok, pad_id))
            toks.append(tok)
            lps.append(torch.where(live, lp, torch.zeros_like(lp)))
            real.append(live)
            hit_eos = live & torch.isin(tok, eos) if eos.numel() else torch.zeros_like(live)
            for i in hit_eos.nonzero()[:, 0].tolist():
                stop[i] = "eos"
            done = done | hit_eos
            if could_stop is not None:
                # Decode only the rows whose new token can complete a stop string.
                check = (live & ~hit_eos & could_stop[tok]).nonzero()[:, 0].tolist()
                if check:
                    recent = torch.stack(toks[-stop_window:], 1)[check].tolist()
                    tails = tokenizer.batch_decode(recent, skip_special_tokens=False)
                    for i, tail in zip(check, tails):
                        if any(s in tail for s in stop_strings):
                            done[i] = True
                            stop[i] = "stop"
            last_step = k == max_new_tokens - 1 or bool(done.all())
            if last_step and not keep_cache:
                break
            # Feed the new tokens (finished rows feed a masked pad, invisible to later tokens).
            attn = torch.cat([attn, live.long()[:, None]], 1)
            out = model(input_ids=tok[:, None], attention_mask=attn,
                        position_ids=next_pos[:, None], past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1]
            next_pos = next_pos + live.long()
            if keep_cache:
                last_logits[live] = logits[live].float()
            if last_step:
                break

    tokens, mask = torch.stack(toks, 1), torch.stack(real, 1)
    ro = Rollouts(prompt_ids=ids, prompt_mask=pmask, tokens=tokens, mask=mask,
                  sampler_logp=torch.stack(lps, 1), stop=stop, group_size=group_size)
    profiling.count("generated_tokens", ro.mask.sum())
    if keep_cache:
        ro.cache, ro.cache_mask, ro.next_pos, ro.last_logits = cache, attn, next_pos, last_logits
    return ro


def teacher_rollouts(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                     pad_id: int, device: torch.device | str = "cpu") -> Rollouts:
    """Rollouts holding given completions (not sampled): lets supervised warm-ups reuse
    `policy_logprobs` for the NLL of a completion given its prompt."""
    ids, pmask = left_pad(prompts, pad_id, device)
    tokens, mask = right_pad(completions, pad_id, device)
    return Rollouts(prompt_ids=ids, prompt_mask=pmask, tokens=tokens, mask=mask.bool(),
                    sampler_logp=torch.zeros(tokens.shape, device=tokens.device),
                    stop=["given"] * len(completions), group_size=1)


@profiling.timed("rl.score_tails")
@torch.no_grad()
def score_tails(model: torch.nn.Module, ro: Rollouts, tails: Sequence[Sequence[int]],
                pad_id: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Teacher-force `tails[i]` right after completion i (reusing the sampling cache) and
    return, per row, the log-probs (temperature 1) of the tail tokens and whether each was
    the argmax. Needs sample_groups(..., keep_cache=True). Consumes the cache."""
    if ro.cache is None:
        raise ValueError("score_tails needs rollouts sampled with keep_cache=True")
    device = ro.tokens.device
    tail_ids, tail_mask = right_pad(tails, pad_id, device)
    attn = torch.cat([ro.cache_mask, tail_mask], 1)
    pos = ro.next_pos[:, None] + positions_from_mask(tail_mask)
    with eval_mode(model):
        logits = model(input_ids=tail_ids, attention_mask=attn, position_ids=pos,
                       past_key_values=ro.cache, use_cache=True).logits.float()
    # Tail token j is predicted by the logits after tail token j-1; token 0 by the logits
    # after the completion's last real token.
    pred = torch.cat([ro.last_logits[:, None], logits[:, :-1]], 1)
    logp = F.log_softmax(pred, -1).gather(-1, tail_ids[..., None])[..., 0]
    top1 = pred.argmax(-1) == tail_ids
    ro.drop_cache()
    return ([logp[i, :len(t)] for i, t in enumerate(tails)],
            [top1[i, :len(t)] for i, t in enumerate(tails)])


@profiling.timed("rl.next_token_logprobs")
@torch.no_grad()
def next_token_logprobs(model: torch.nn.Module, contexts: Sequence[Sequence[int]],
                        targets: Sequence[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target_i | context_i) (temperature 1) and argmax hits, one batched forward."""
    device = next(model.parameters()).device
    ids, mask = left_pad(contexts, pad_id, device)
    with eval_mode(model):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                       logits_to_keep=1).logits[:, -1].float()
    tgt = torch.tensor(list(targets), dtype=torch.long, device=device)
    return F.log_softmax(logits, -1).gather(-1, tgt[:, None])[:, 0], logits.argmax(-1) == tgt


# ---- the gradient-bearing forward -----------------------------------------------------------

@profiling.timed("rl.policy_fwd")
def policy_logprobs(model: torch.nn.Module, ro: Rollouts, rows: torch.Tensor | None = None, *,
                    temperature: float = 1.0, with_entropy: bool = True,
                    entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One forward over prompt + completion for the selected rows. Returns (logp [n, L],
    mask [n, L], entropy [n, L] or None): log-probs of the sampled tokens under the
    temperature-scaled policy (with grad when grad is enabled), and that policy's entropy
    (detached unless entropy_grad, for an entropy bonus). Only completion positions get
    logits (logits_to_keep)."""
    rows = torch.arange(ro.tokens.shape[0], device=ro.tokens.device) if rows is None else rows
    mask = ro.mask[rows]
    width = max(1, int(mask.sum(-1).max()))       # drop columns that are pad in every row
    tokens, mask = ro.tokens[rows, :width], mask[:, :width]
    ids = torch.cat([ro.prompt_ids[rows], tokens[:, :-1]], 1)
    attn = torch.cat([ro.prompt_mask[rows], mask[:, :-1].long()], 1)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=positions_from_mask(attn),
                   logits_to_keep=width).logits.float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    # ONE log-softmax over the vocabulary gives the sampled tokens' log-probs and the entropy
    # (cross_entropy and token_entropy each ran their own).
    logp_all = F.log_softmax(logits, -1)
    logp = logp_all.gather(-1, tokens[..., None])[..., 0]
    ent = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            ent = entropy_from_logp(logp_all if entropy_grad else logp_all.detach())
    return logp * mask, mask, ent


# ---- advantages and the surrogate ---------------------------------------------------------

def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO (RLP): A_i = G/(G-1) * (r_i - mean_j r_j) within each group; no std division.
    Equals r_i minus the mean of the *other* G-1 rewards."""
    g = rewards.view(-1, group_size)
    return (group_size / (group_size - 1) * (g - g.mean(-1, keepdim=True))).view(-1)


def group_advantages(rewards: torch.Tensor, group_size: int,
                     eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO (RPT): A_i = (r_i - mean) / (std + eps) within each group, std unbiased as in TRL.
    Returns (advantages, keep): groups whose rewards are all equal carry no signal and are
    dropped (dynamic sampling); their rows get keep = False and advantage 0."""
    g = rewards.view(-1, group_size).float()
    keep = (g.max(-1).values - g.min(-1).values) > 0
    adv = (g - g.mean(-1, keepdim=True)) / (g.std(-1, keepdim=True) + eps)
    adv = torch.where(keep[:, None], adv, torch.zeros_like(adv))
    return adv.view(-1), keep.repeat_interleave(group_size)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    d = ref_logp - logp
    return d.exp() - d - 1


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor,
                      mask: torch.Tensor, *, eps_low: float, eps_high: float,
                      ref_logp: torch.Tensor | None = None,
                      kl_beta: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """-min(r*A, clip(r, 1-eps_low, 1+eps_high)*A) per token (+ beta*KL), with r = exp(logp -
    old_logp) the importance ratio (not RunConfig.rho), averaged over each sequence's masked
    tokens (1/|c|), then over the sequences (a sequence with no masked token adds 0).
    logp/old_logp/mask: [n, L], adv: [n]."""
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    a = adv[:, None].to(logp.dtype)
    unclipped, clipped = ratio * a, ratio.clamp(1 - eps_low, 1 + eps_high) * a
    per_token = -torch.minimum(unclipped, clipped)
    kl = None
    if ref_logp is not None and kl_beta > 0:
        kl = kl_k3(logp, ref_logp)
        per_token = per_token + kl_beta * kl
    per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    loss = per_seq.mean()
    n_tok = mask.sum().clamp(min=1)
    with torch.no_grad():
        stats = {"rl/clip_frac": ((clipped < unclipped).to(mask.dtype) * mask).sum().item() / n_tok.item(),
                 "rl/ratio_mean": (ratio.detach() * mask).sum().item() / n_tok.item()}
        if kl is not None:
            stats["rl/kl"] = (kl.detach() * mask).sum().item() / n_tok.item()
    return loss, stats


def zero_loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """A zero loss that still comes from a forward through `model` (two tokens), for a step
    with nothing to train on: backward() works and every data-parallel rank runs a forward."""
    return model(input_ids=ids[:1, :2]).logits.float().sum() * 0.0


def rollout_flops(desc: dict, ro: Rollouts, extra_tokens: int = 0) -> float:
    """Forward FLOPs of sampling: each prompt's prefill (once per group) and the generated
    tokens (plus `extra_tokens` teacher-forced after them), at their average context length."""
    prompt = int(ro.prompt_mask.sum()) // ro.group_size
    gen = int(ro.mask.sum()) + extra_tokens
    p_ctx = prompt * ro.group_size / max(1, ro.prompt_mask.shape[0])
    g_ctx = p_ctx + gen / max(1, 2 * ro.tokens.shape[0])
    return forward_flops(desc, prompt, int(p_ctx)) + forward_flops(desc, gen, int(g_ctx))


# ---- EMA ---------------------------------------------------------------------------------

@profiling.timed("rl.ema_update")
@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, tau: float) -> None:
    """phi <- tau * phi + (1 - tau) * theta for floating parameters; buffers are copied."""
    ema_params = dict(ema.named_parameters())
    pairs = [(ema_params[k], p.detach()) for k, p in model.named_parameters()
             if k in ema_params and p.is_floating_point()]
    if pairs:
        torch._foreach_lerp_([e for e, _ in pairs], [p.to(e.dtype) for e, p in pairs], 1.0 - tau)
    ema_buffers = dict(ema.named_buffers())
    for k, b in model.named_buffers():
        if k in ema_buffers:
            ema_buffers[k].copy_(b)


def module_tensors(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """Parameters of a frozen copy for Objective.state_tensors (tied weights stored once)."""
    out, seen = {}, set()
    for k, p in module.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out[prefix + k] = p.detach().clone()
    return out


@torch.no_grad()
def load_module_tensors(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> bool:
    """Inverse of module_tensors; returns False when `tensors` holds nothing for `prefix`."""
    params = dict(module.named_parameters())
    found = False
    for k, v in tensors.items():
        if k.startswith(prefix) and k[len(prefix):] in params:
            params[k[len(prefix):]].copy_(v.to(params[k[len(prefix):]].device))
            found = True
    return found


# ---- shared utilities for the objectives ---------------------------------------------------

def _chat_ids(tokenizer, role: str, content: str) -> list[int]:
    """One message and the opening of the assistant's turn, through the chat template when
    the tokenizer has one (else the plain text and a blank line)."""
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template([{"role": role, "content": content}],
                                                 tokenize=False, add_generation_prompt=True)
            return tokenizer.encode(text, add_special_tokens=False)
        except Exception:  # noqa: BLE001 - e.g. a template that rejects a lone system message
            pass
    return tokenizer.encode(content + "\n\n", add_special_tokens=False)


def chat_head(tokenizer, system: str) -> list[int]:
    """A system prompt, then the assistant's turn opens (RLP: the document is its text)."""
    return _chat_ids(tokenizer, "system", system)


def user_prompt(tokenizer, content: str) -> list[int]:
    """A user message, then the assistant's turn opens (RPT's question)."""
    return _chat_ids(tokenizer, "user", content)


@torch.no_grad()
def window_token_records(model: torch.nn.Module, tokenizer, ids: torch.Tensor, *,
                         display_share: float, extras: list[list[dict] | None] | None = None) -> list[dict]:
    """`tokens` table rows for a few windows (no grad): the trained model's own per-token
    entropy and NLL, with per-position extras (e.g. which position was trained)."""
    rows: list[dict] = []
    with eval_mode(model):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    for s in range(ids.shape[0]):
        rows += sequence_records(tokenizer, ids[s], logits[s], sample=s, display_share=display_share,
                                 extra=extras[s] if extras else None)
    return rows
