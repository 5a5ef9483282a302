"""RLP: Reinforcement as a Pretraining objective (objectives.md §2, arXiv:2510.01265).

At one random position t per window the model samples G thoughts c, and each thought is
rewarded by the information it adds about the true next token:

    r(c) = log p_θ(x_t | x_<t, c) − log p_φ(x_t | x_<t)        (both without gradient)

with φ an EMA teacher of θ (set lazily from θ, updated after every optimizer step).
Advantages are RLOO, the loss is the clipped surrogate over the thought tokens only; x_t
itself is never trained (no next-token loss).

Positions: uniformly random by default. With position_sampling=forking (issue 12, "reasoning
belongs at the forking tokens") they are drawn uniformly from the top `position_share` of the
window's positions by the entropy of x_t under the current policy θ (one no-grad forward over
the window, counted in the step's FLOPs), so RLP thinks where the model is unsure.

Prompt layout (ids, identical for both scorings):
    head(system prompt) · x_<t · "<think>" · c · "</think>" · x_t     thought-conditioned
    head(system prompt) · x_<t · "<think>"     "</think>" · x_t       no thought
The document stays the assistant's text with its own token ids, and the thought sits
exactly between x_<t and x_t. A thought that closes itself keeps its sampled "</think>"
(that token is part of the policy); otherwise "</think>" is appended, untrained.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lab import rl
from lab.config import setting
from lab.entropy import entropy_stats, forking_mask, token_entropy
from lab.flops import forward_flops, train_flops
from lab.objectives.base import Objective, StepOutput
from lab.records import DISPLAY_SHARE

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
POSITION_SAMPLINGS = ("uniform", "forking")
SYSTEM_PROMPT = ("You continue documents. Before the next part of the text, think briefly "
                 "between <think> and </think>, then continue the text in the same style.")


@dataclass
class RLPParams:
    positions_per_doc: int = setting(1, "Positions per training window where thoughts are sampled.")
    group_size: int = setting(4, "G: thoughts sampled per position; each is scored against the group's "
                              "mean (RLOO). Paper 16; 4 keeps CPU runs small.")
    temperature: float = setting(0.7, "Sampling temperature of the thoughts.")
    max_thought_tokens: int = setting(32, "Longest thought in tokens (paper 2048; budgets this short hurt "
                                      "at their scale).")
    tau: float = setting(0.999, "Decay of the EMA teacher that scores the no-thought baseline; 1.0 = a "
                         "frozen teacher (ablation).", advanced=True)
    eps_low: float = setting(0.2, "Clipped surrogate: lower clip of the policy's probability ratio.",
                             advanced=True)
    eps_high: float = setting(0.28, "Clipped surrogate: upper clip of the probability ratio.", advanced=True)
    kl_beta: float = setting(0.0, "Weight of a k3 KL penalty to the EMA teacher on thought tokens "
                             "(paper: 0).", advanced=True)
    min_context: int = setting(8, "Tokens of text before the earliest position a thought may follow.",
                               advanced=True)
    gain_vs_init: bool = setting(True, "Keep a frozen copy of the initial model to log rlp/gain_vs_init "
                                 "(costs one extra forward pass).", advanced=True)
    system_prompt: str = setting(SYSTEM_PROMPT, "System prompt that asks for a thought between <think> "
                                 "and </think>.", advanced=True)
    position_sampling: str = setting("uniform", "How thought positions are picked: uniform over the window, or "
                                     "forking = uniform over the top position_share of the window's positions "
                                     "by the current policy's entropy of the next token.")
    position_share: float = setting(0.2, "forking position sampling: share of the window's positions drawn from.")

    def problems(self, cfg) -> list[str]:
        out = []
        if self.group_size < 2:
            out.append(f"rlp group_size must be at least 2 for RLOO (got {self.group_size})")
        if self.positions_per_doc < 1:
            out.append(f"rlp positions_per_doc must be at least 1 (got {self.positions_per_doc})")
        if not self.temperature > 0:
            out.append(f"rlp temperature must be positive (got {self.temperature})")
        if self.max_thought_tokens < 1:
            out.append(f"rlp max_thought_tokens must be at least 1 (got {self.max_thought_tokens})")
        if not 0 <= self.tau <= 1:
            out.append(f"rlp tau (EMA decay) must be in [0, 1] (got {self.tau})")
        if not 0 <= self.eps_low < 1 or self.eps_high < 0:
            out.append(f"rlp clip range needs 0 <= eps_low < 1 and eps_high >= 0 "
                       f"(got {self.eps_low}, {self.eps_high})")
        if self.kl_beta < 0:
            out.append(f"rlp kl_beta must be >= 0 (got {self.kl_beta})")
        if self.min_context < 1 or self.min_context >= cfg.seq_len:
            out.append(f"rlp min_context must be in [1, seq_len) (got {self.min_context})")
        elif self.positions_per_doc > cfg.seq_len - self.min_context:
            out.append(f"rlp positions_per_doc ({self.positions_per_doc}) exceeds the positions "
                       f"a window offers after min_context ({cfg.seq_len - self.min_context})")
        if not self.system_prompt.strip():
            out.append("rlp system_prompt is empty")
        if self.position_sampling not in POSITION_SAMPLINGS:
            out.append(f"rlp position_sampling must be one of {', '.join(POSITION_SAMPLINGS)} "
                       f"(got {self.position_sampling!r})")
        if not 0 < self.position_share <= 1:
            out.append(f"rlp position_share must be in (0, 1] (got {self.position_share})")
        return out


class RLP(Objective):
    name = "rlp"
    Params = RLPParams
    description = ("RLP: sample thoughts before one next token; reward = log-likelihood gain "
                   "of the true token over a no-thought EMA teacher; RLOO + clipped surrogate.")

    def __init__(self, model, tokenizer, params, cfg, device) -> None:
        super().__init__(model, tokenizer, params, cfg, device)
        p = self.params
        self.pad_id = rl.pad_id_of(tokenizer)
        self.head = rl.chat_head(tokenizer, p.system_prompt)
        self.open_ids = tokenizer.encode(THINK_OPEN, add_special_tokens=False)
        self.close_ids = tokenizer.encode(THINK_CLOSE, add_special_tokens=False)
        self.ema: torch.nn.Module | None = None       # φ, set lazily from θ on the first batch
        # θ_0 for rlp/gain_vs_init. The objective is built before a resumed run loads its
        # checkpoint weights (lab/train.py), so this is always the starting model.
        self.initial = rl.frozen_copy(model, device) if p.gain_vs_init else None

    # ---- teacher state ---------------------------------------------------------------
    def after_optimizer_step(self) -> None:
        if self.ema is not None:
            rl.ema_update(self.ema, self.raw_model, self.params.tau)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return rl.module_tensors(self.ema, "ema.") if self.ema is not None else {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if any(k.startswith("ema.") for k in tensors):
            self.ema = rl.frozen_copy(self.raw_model, self.device)
            rl.load_module_tensors(self.ema, tensors, "ema.")

    # ---- one step --------------------------------------------------------------------
    def _positions(self, ids: torch.Tensor) -> tuple[list[tuple[int, int]], torch.Tensor | None]:
        """(row, t) pairs: positions_per_doc distinct targets x_t per window, each with at least
        min_context tokens of prefix: uniformly random, or (position_sampling=forking) drawn from
        the top position_share of those by the current policy's entropy of x_t. Also that
        entropy [B, T-1] (index t-1 for x_t) when it was computed."""
        p, (B, T) = self.params, ids.shape
        lo = min(p.min_context, T - 1)
        if p.position_sampling == "uniform":
            return [(b, t) for b in range(B) for t in rl.sample_positions(lo, T, p.positions_per_doc)], None
        with torch.no_grad(), rl.eval_mode(self.raw_model):
            logits = self.raw_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        ent = token_entropy(logits[:, :-1])                                   # [B, T-1]
        n = T - lo
        k = min(n, max(p.positions_per_doc, round(p.position_share * n)))
        out = []
        for b in range(B):
            top = torch.topk(ent[b, lo - 1:], k).indices + lo                  # targets t
            pick = rl.sample_positions(0, k, p.positions_per_doc)
            out += [(b, t) for t in sorted(top[pick].tolist())]
        return out, ent

    def step(self, batch: dict[str, torch.Tensor], *, record: int) -> StepOutput:
        p, tok, G = self.params, self.tokenizer, self.params.group_size
        ids = batch["input_ids"]
        if self.ema is None:
            self.ema = rl.frozen_copy(self.raw_model, self.device)
        positions, window_ent = self._positions(ids)
        contexts = [self.head + ids[b, :t].tolist() for b, t in positions]
        targets = [int(ids[b, t]) for b, t in positions]

        # 1. G thoughts per position in one batched KV-cached sampling loop.
        ro = rl.sample_groups(self.raw_model, [c + self.open_ids for c in contexts], group_size=G,
                              max_new_tokens=p.max_thought_tokens, temperature=p.temperature,
                              pad_id=self.pad_id, eos_ids=[tok.eos_token_id],
                              stop_strings=[THINK_CLOSE], tokenizer=tok, keep_cache=True)
        rep = lambda x: x.repeat_interleave(G)  # noqa: E731 - per position -> per thought

        # 2. Rewards: θ with the thought (continuing the sampling cache) vs φ without.
        tails = [([] if ro.stop[i] == "stop" else self.close_ids) + [targets[i // G]]
                 for i in range(len(ro.stop))]
        n_tail = sum(len(t) for t in tails)
        logp_tails, top1_tails = rl.score_tails(self.raw_model, ro, tails, self.pad_id)
        logp_thought = torch.stack([lp[-1] for lp in logp_tails])
        top1_thought = torch.stack([h[-1] for h in top1_tails]).float()
        no_thought = [c + self.open_ids + self.close_ids for c in contexts]
        logp_ema, _ = rl.next_token_logprobs(self.ema, no_thought, targets, self.pad_id)
        logp_self, top1_self = rl.next_token_logprobs(self.raw_model, no_thought, targets, self.pad_id)
        logp_init = (rl.next_token_logprobs(self.initial, no_thought, targets, self.pad_id)[0]
                     if self.initial is not None else None)
        reward = logp_thought - rep(logp_ema)
        adv = rl.rloo_advantages(reward, G)

        # 3. Clipped surrogate over thought tokens only, exactly on-policy (old = detached new).
        logp, mask, ent = rl.policy_logprobs(self.model, ro, temperature=p.temperature)
        selected = forking_mask(ent, mask, self.cfg.rho)
        ref = None
        if p.kl_beta > 0:
            with torch.no_grad():
                ref = rl.policy_logprobs(self.ema, ro, temperature=p.temperature, with_entropy=False)[0]
        loss, stats = rl.clipped_surrogate(logp, logp.detach(), adv, selected, eps_low=p.eps_low,
                                           eps_high=p.eps_high, ref_logp=ref, kl_beta=p.kl_beta)

        lengths = ro.lengths.float()
        n_real = mask.sum().clamp(min=1)
        metrics = {
            "reward/mean": reward.mean().item(),
            "reward/std": reward.std().item() if reward.numel() > 1 else 0.0,
            "rlp/nll_thought": -logp_thought.mean().item(),
            "rlp/nll_no_thought": -logp_self.mean().item(),
            "rlp/nll_ema": -logp_ema.mean().item(),
            "rlp/top1_thought": top1_thought.mean().item(),
            "rlp/top1_no_thought": top1_self.float().mean().item(),
            "thought/length": lengths.mean().item(),
            "thought/closed": sum(s == "stop" for s in ro.stop) / len(ro.stop),
            "rl/adv_std": adv.std().item() if adv.numel() > 1 else 0.0,
            # Sampler vs training-forward log-probs of the same tokens: ~0 unless dropout or
            # mixed precision make the two forwards differ.
            "rl/sampler_logp_diff": ((logp.detach() - ro.sampler_logp[:, :logp.shape[1]]).abs()
                                     * mask).sum().item() / n_real.item(),
            "selected_share": selected.sum().item() / n_real.item(),
            **stats, **entropy_stats(ent, mask),
        }
        if logp_init is not None:
            metrics["rlp/gain_vs_init"] = (logp_thought - rep(logp_init)).mean().item()
        if window_ent is not None:   # how unsure the policy was where it thought, vs the window
            metrics["rlp/position_entropy"] = sum(window_ent[b, t - 1].item() for b, t in positions) / len(positions)
            metrics["rlp/window_entropy"] = window_ent.mean().item()

        # FLOPs: rollouts (prefill + thought + teacher-forced tail), the no-thought scorings
        # (θ, φ and θ_0), the gradient forward with its backward, and the optional KL forward.
        nt_tokens = sum(len(c) for c in no_thought)
        grad_tokens = int(ro.prompt_mask.sum() + mask.sum())
        grad_ctx = grad_tokens // ro.tokens.shape[0]
        flops = (rl.rollout_flops(self.desc, ro, n_tail)
                 + (2 + (logp_init is not None))
                 * forward_flops(self.desc, nt_tokens, nt_tokens // len(no_thought))
                 + train_flops(self.desc, grad_tokens, grad_ctx)
                 + (forward_flops(self.desc, grad_tokens, grad_ctx) if ref is not None else 0.0)
                 + (forward_flops(self.desc, ids.numel(), ids.shape[1]) if window_ent is not None else 0.0))
        out = StepOutput(loss=loss, metrics=metrics, tokens=int(batch["attention_mask"].sum()),
                         flops=flops)
        if record > 0:
            self._records(out, ids, positions, targets, ro, reward, adv, logp_thought, logp_self,
                          logp_ema, logp_init, record)
        return out

    def _records(self, out: StepOutput, ids, positions, targets, ro, reward, adv, logp_thought,
                 logp_self, logp_ema, logp_init, record: int) -> None:
        tok, G = self.tokenizer, self.params.group_size
        texts = ro.texts(tok)
        extras: list[list[dict]] = [[{} for _ in range(ids.shape[1])] for _ in range(min(record, ids.shape[0]))]
        for k, (b, t) in enumerate(positions):
            if b >= record:
                continue
            context = tok.decode(ids[b, :t].tolist(), skip_special_tokens=False)[-200:]
            target = tok.decode([targets[k]], skip_special_tokens=False)
            extras[b][t] = {"rlp_position": True, "mean_reward": reward[k * G:(k + 1) * G].mean().item(),
                            "selection": self.params.position_sampling}
            for j in range(G):
                i = k * G + j
                extra = {"context": context, "logp_gain": reward[i].item(),
                         "ema_nll": -logp_ema[k].item(), "stop": ro.stop[i]}
                if logp_init is not None:
                    extra["gain_vs_init"] = (logp_thought[i] - logp_init[k]).item()
                out.thought_records.append({
                    "sample": b, "position": t, "idx": j, "kind": "rlp", "text": texts[i],
                    "n_tokens": int(ro.lengths[i]), "reward": reward[i].item(),
                    "advantage": adv[i].item(), "base_nll": -logp_self[k].item(),
                    "mixed_nll": -logp_thought[i].item(), "target": target, "extra": extra})
        out.token_records = rl.window_token_records(self.raw_model, tok, ids[:len(extras)],
                                                    display_share=DISPLAY_SHARE, extras=extras)
