"""The Quiet-STaR objective: base NLL, mixed NLL over the thoughts' talk steps, REINFORCE on
helpful thoughts (objectives.md §1).

Forking mask (cfg.rho < 1, §4): the top-rho positions by base entropy over the micro-batch
are selected once; the base NLL averages over them, and the mixed NLL over the thoughts
inserted at those positions (the thought after x_t, whose first talk target x_{t+1} is the
forking token). The policy term keeps every valid position.

Thoughts at forking positions only (thought_positions=forking, issue 12): pass 0 runs first,
then only the top `thought_share` of the micro-batch's candidate positions by the entropy of
x_{t+1} get a thought; the thought passes run over those slots only (passes.pack_positions), so
their cost scales with the share. The mixed NLL, the rewards and the policy term cover those
positions; the base NLL still covers every token (it is pass 0, already paid for, and keeps the
model a language model where it does not think). `thought_share` is its own setting, not
cfg.rho (which selects the loss's tokens) and not the records' display share.

Random thoughts, trained (thought_content=random, §5 as a training arm): every thought is
uniformly random tokens of the same length, drawn fresh at every step; there is no policy term
(nothing was sampled from the policy), and the head and the model learn from the mixed NLL
only, like pause tokens. The head remembers it, so inference thinks random thoughts too.

Record conventions (tables `tokens` and `thoughts`): a thought row's `position` is the index of
the token it is trying to predict (the thought was inserted after x_{position-1}), the same
convention as `tokens` (row t = token x_t and the distribution that predicted it) and as RLP
and RPT, so the tables join on (run_id, step, sample, position).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lab.entropy import entropy_stats, forking_mask, masked_mean, nll_and_entropy
from lab.errors import LabError
from lab.flops import train_flops
from lab.objectives.base import Objective, StepOutput
from lab.objectives.quiet_star.head import HEAD_NAME, n_vocab_of, new_head, unwrap
from lab.objectives.quiet_star.params import QuietSTaRParams
from lab.objectives.quiet_star.passes import (Thoughts, all_positions, base_pass,
                                              check_supported, pack_positions,
                                              require_decoder_only, talk_windows, thought_passes)
from lab.records import sequence_records, token_text, token_texts


def thought_rewards(logp_sum: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """r_i = Σ_k log p_mixed(x_{t+k+1} | thought i) minus the mean over the position's
    thoughts (along `dim`), clamped at >= 0 and detached: only better-than-average thoughts
    are reinforced. With one thought per position every reward is 0."""
    x = logp_sum.detach()
    return (x - x.mean(dim=dim, keepdim=True)).clamp(min=0)


class QuietSTaR(Objective):
    name = "quiet-star"
    Params = QuietSTaRParams
    description = ("Quiet-STaR: a sampled thought after every token, in parallel; a mixing head "
                   "blends post-thought and base predictions; REINFORCE on helpful thoughts.")

    def __init__(self, model, tokenizer, params, cfg, device: torch.device) -> None:
        if isinstance(params, dict):
            params = QuietSTaRParams(**params)
        problems = params.problems(cfg)
        if problems:
            raise LabError("Invalid Quiet-STaR settings:\n- " + "\n- ".join(problems))
        super().__init__(model, tokenizer, params, cfg, device)
        raw = unwrap(model)
        require_decoder_only(raw)
        self.n_vocab = n_vocab_of(raw, tokenizer)
        self.qs_head = new_head(raw, tokenizer, scale=params.meta_lr_scale, mixing=params.mixing,
                                n_ahead=params.n_ahead,
                                random_thoughts=params.thought_content == "random")
        check_supported(raw, self.qs_head, self.n_vocab)
        max_pos = _max_positions(raw)
        needed = getattr(cfg, "seq_len", 0) + params.n_ahead - 3
        if max_pos and needed > max_pos:
            raise LabError(f"Quiet-STaR needs position ids up to seq_len + n_ahead - 3 = {needed}, "
                           f"but the model supports {max_pos}: lower seq_len or n_ahead.")

    def extra_modules(self) -> dict[str, nn.Module]:
        return {HEAD_NAME: self.qs_head}

    def step(self, batch: dict[str, torch.Tensor], *, record: int) -> StepOutput:
        p, ids, attn = self.params, batch["input_ids"], batch["attention_mask"]
        B, L = ids.shape
        P, n_talk = p.n_passes, p.n_ahead_talk
        n_pos = L - n_talk            # positions with n_talk true tokens after them
        if n_pos < 1:
            raise LabError(f"Sequences of {L} tokens are too short for n_ahead_talk={n_talk}.")
        base = base_pass(self.model, ids, attn)

        # Base prediction: exactly the NTP computation, over every token (or the top-rho).
        valid = attn[:, 1:].bool()
        base_nll, ent = nll_and_entropy(base.logits[:, :-1], ids[:, 1:])
        selected = forking_mask(ent, valid, self.cfg.rho)
        base_loss = masked_mean(base_nll, selected)

        # Thought slots: positions t whose n_talk targets are all real tokens; with
        # thought_positions=forking only the top thought_share of them by the entropy of x_{t+1}.
        candidates = attn.bool().unfold(1, n_talk + 1, 1).all(-1)            # [B, n_pos]
        if p.thought_positions == "forking":
            rows, positions, ok = pack_positions(forking_mask(ent[:, :n_pos], candidates, p.thought_share))
        else:
            (rows, positions), ok = all_positions(B, n_pos, ids.device), candidates
        random = p.thought_content == "random"
        th = thought_passes(self.model, self.qs_head, base, ids, attn, rows, positions, n_ahead=p.n_ahead,
                            n_talk=n_talk, n_passes=P, n_vocab=self.n_vocab,
                            sample_temperature=p.sample_temperature, corrupted=random,
                            reinforce_temperature=None if random else p.reinforce_temperature)
        R, M = positions.shape

        # Talk steps of the N real thought slots.
        base_h = talk_windows(th.base_hidden, rows, positions, n_talk)[:, ok]  # [n_talk, N, h]
        post_h = th.talk_hidden.transpose(2, 3)[:, ok]                         # [n_talk, N, P, h]
        mixed, w = self.qs_head(base_h[:, :, None].expand_as(post_h), post_h)
        mixed_logits = unwrap(self.model).get_output_embeddings()(mixed)      # [n_talk, N, P, V]
        targets = talk_windows(ids, rows, positions, n_talk, offset=1)[:, ok]  # [n_talk, N]
        mixed_nll = F.cross_entropy(mixed_logits.float().flatten(0, 2),
                                    targets[:, :, None].expand(-1, -1, P).reshape(-1),
                                    reduction="none").view(n_talk, -1, P)
        sel = selected[rows].gather(1, positions)[ok]                          # [N]
        mixed_loss = masked_mean(mixed_nll.mean(dim=(0, 2)), sel)

        # REINFORCE on the sampled tokens of better-than-average thoughts (none for random ones).
        reward = thought_rewards(-mixed_nll.sum(0))                            # [N, P]
        if th.policy_logp is not None and reward.numel():
            logp = th.policy_logp.transpose(1, 2)[ok]                          # [N, P, S]
            policy = -(reward[..., None] * logp).mean()
        else:
            policy = base_loss.new_zeros(())
        loss = 0.5 * base_loss + 0.5 * mixed_loss + p.policy_weight * policy

        with torch.no_grad():
            base_talk = talk_windows(base_nll, rows, positions, n_talk)[:, ok]  # [n_talk, N]
            gain = (base_talk[..., None] - mixed_nll).mean() if sel.numel() else torch.tensor(0.)
            n_ok = ok.sum().item()
            metrics = {"loss/base_nll": base_loss.item(), "loss/mixed_nll": mixed_loss.item(),
                       "loss/policy": policy.item() + 0.0, "reward/mean": _mean(reward),
                       "reward/std": reward.float().std().item() if reward.numel() > 1 else 0.0,
                       "mix/w_mean": _mean(w), "mix/nll_gain": gain.item(),
                       "thought/length": float(p.n_ahead - 3),
                       # thinking positions / positions that could think; and the share of the
                       # passes' R·M slots that are real (the rest is ignored padding)
                       "thought/share": n_ok / max(candidates.sum().item(), 1),
                       "thought/slot_use": n_ok / (R * M),
                       "nll": masked_mean(base_nll.detach(), valid).item(),
                       "selected_share": selected.float().sum().item() / max(valid.sum().item(), 1),
                       **entropy_stats(ent, valid)}
        tokens = int(attn.sum())
        flops = train_flops(self.desc, tokens, L) + sum(
            train_flops(self.desc, R * P * M, L + k * M) for k in range(1, th.n_sweeps + 1))
        out = StepOutput(loss=loss, metrics=metrics, tokens=tokens, flops=flops)
        if record > 0:
            self._record(out, min(record, B), ids, th, ok, ent, base_nll, mixed_nll, mixed_logits,
                         w, reward, targets)
        return out

    @torch.no_grad()
    def _record(self, out: StepOutput, n: int, ids, th: Thoughts, ok, ent, base_nll, mixed_nll,
                mixed_logits, w, reward, targets) -> None:
        """Token rows (base prediction, with w / mixed NLL of the thoughts that predicted each
        token in `extra`) and one thought row per (position, thought) for the first n sequences.
        Only the positions that thought get those extras (all, or the forking ones)."""
        tok = self.tokenizer
        text_row = th.rows.tolist()                                            # [R]
        where = [(text_row[r], m, t, r) for (r, m), t in zip(ok.nonzero().tolist(),
                                                             th.positions[ok].tolist())]
        ent_l = ent.tolist()
        # one device->host copy of everything (no per-value .item() syncs on a GPU)
        logp_sum = -mixed_nll.sum(0)
        raw_reward = (logp_sum - logp_sum.mean(-1, keepdim=True)).tolist()    # [N][P]
        talk_nll = mixed_nll.permute(1, 2, 0).tolist()                         # [N][P][n_talk]
        talk_w = w[..., 0].permute(1, 2, 0).tolist()                           # [N][P][n_talk]
        reward_l, base_l = reward.tolist(), base_nll.tolist()
        pred = mixed_logits[0].argmax(-1).tolist()                             # [N][P]
        target_l = targets[0].tolist()
        thought_ids = th.thought_ids.tolist()                                  # [R][P][M][S]
        selection = self.params.thought_positions
        n_talk = mixed_nll.shape[0]
        for s in range(n):
            rows = [(i, m, t, r) for i, (b, m, t, r) in enumerate(where) if b == s]
            extras: list[dict] = [{} for _ in range(ids.shape[1])]
            for r, _, t, _ in rows:
                extras[t + 1] = {"w": sum(x[0] for x in talk_w[r]) / len(talk_w[r]),
                                 "mixed_nll": sum(x[0] for x in talk_nll[r]) / len(talk_nll[r]),
                                 "thought": selection}
            out.token_records += sequence_records(tok, ids[s], th.base_logits[s], sample=s,
                                                  extra=extras)
            for r, m, t, row in rows:
                for i in range(len(raw_reward[r])):
                    tids = thought_ids[row][i][m]
                    out.thought_records.append({
                        "sample": s, "position": t + 1, "idx": i, "kind": "quiet-star",
                        "text": tok.decode(tids, clean_up_tokenization_spaces=False),
                        "n_tokens": len(tids), "reward": reward_l[r][i], "advantage": None,
                        "weight": talk_w[r][i][0], "base_nll": base_l[s][t],
                        "mixed_nll": talk_nll[r][i][0], "prediction": token_text(tok, pred[r][i]),
                        "target": token_text(tok, target_l[r]),
                        "extra": {"after": t, "raw_reward": raw_reward[r][i],
                                  "talk_mixed_nll": talk_nll[r][i], "talk_w": talk_w[r][i],
                                  "talk_base_nll": base_l[s][t:t + n_talk],
                                  "entropy": ent_l[s][t], "selection": selection,
                                  "content": self.params.thought_content,
                                  "tokens": token_texts(tok, tids)}})


def _mean(x: torch.Tensor) -> float:
    return x.float().mean().item() if x.numel() else 0.0


def _max_positions(raw_model) -> int | None:
    cfg = raw_model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
