"""Shared RL pieces (lab/rl.py): sampling with a KV cache, scoring after a completion,
advantages, the clipped surrogate, the EMA update."""
from __future__ import annotations

import pytest
import torch

from conftest import logits_capture
import torch.nn.functional as F

from lab import rl

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    from lab.models import load_model
    lm = load_model("tiny-random")
    return lm.model, lm.tokenizer


def _plain_logprobs(model, seq: list[int], temperature: float = 1.0) -> torch.Tensor:
    """log p(seq[i+1] | seq[:i+1]) from one ordinary forward without cache or padding."""
    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0].float() / temperature
    return F.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(seq[1:])[:, None])[:, 0]


def test_rloo_advantages_hand_group():
    r = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0])
    adv = rl.rloo_advantages(r, 4)
    # G/(G-1)·(r − mean) = r − mean of the other three.
    assert torch.allclose(adv[:4], torch.tensor([-8 / 3, -4 / 3, 0.0, 4.0]))
    assert torch.equal(adv[4:], torch.zeros(4))          # equal rewards -> zero advantage
    assert torch.allclose(adv[0], r[0] - r[1:4].mean())


def test_group_advantages_normalise_and_drop():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    adv, keep = rl.group_advantages(r, 4, eps=0.0)
    # mean 0.25, unbiased std 0.5
    assert torch.allclose(adv[:4], torch.tensor([1.5, -0.5, -0.5, -0.5]))
    assert keep.tolist() == [True] * 4 + [False] * 8      # all-equal groups dropped
    assert torch.equal(adv[4:], torch.zeros(8))


def test_clipped_surrogate_on_policy_is_policy_gradient():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv = torch.tensor([2.0, -1.0])
    loss, stats = rl.clipped_surrogate(logp, logp.detach(), adv, mask, eps_low=0.2, eps_high=0.28)
    loss.backward()
    assert stats["rl/clip_frac"] == 0.0 and stats["rl/ratio_mean"] == pytest.approx(1.0)
    # d loss / d logp = −A / |c| / n_sequences on real tokens, 0 on padding
    expected = torch.tensor([[-2 / 3, -2 / 3, -2 / 3], [0.5, 0.5, 0.0]]) / 2
    assert torch.allclose(logp.grad, expected)
    assert loss.item() == pytest.approx(-(2.0 - 1.0) / 2)


def test_clipped_surrogate_clips_outside_the_trust_region():
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]])).requires_grad_()
    loss, stats = rl.clipped_surrogate(logp, old, torch.tensor([1.0]), torch.ones(1, 3, dtype=torch.bool),
                                       eps_low=0.2, eps_high=0.28)
    loss.backward()
    # A > 0: ratio 1.5 is clipped at 1.28 (no gradient); 0.5 and 1.1 are not clipped.
    assert stats["rl/clip_frac"] == pytest.approx(1 / 3)
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] != 0 and logp.grad[0, 2] != 0


def test_sampling_cache_scoring_and_policy_forward_agree(tiny):
    model, tok = tiny
    torch.manual_seed(0)
    prompts = [tok.encode("Tom has 3 apples and", add_special_tokens=False), tok.encode("x", add_special_tokens=False)]
    ro = rl.sample_groups(model, prompts, group_size=3, max_new_tokens=6, temperature=0.7,
                          pad_id=tok.pad_token_id, eos_ids=[tok.eos_token_id], keep_cache=True)
    assert ro.tokens.shape[0] == 6 and ro.lengths.tolist() == [6] * 6
    tails = [[5, 6, 7], [8]] * 3
    logp_tails, _ = rl.score_tails(model, ro, tails, tok.pad_token_id)
    for i in range(6):
        seq = prompts[i // 3] + ro.row_tokens(i) + tails[i]
        n = len(tails[i])
        assert torch.allclose(_plain_logprobs(model, seq)[-n:], logp_tails[i], atol=1e-4)
        L = len(ro.row_tokens(i))
        sampled = _plain_logprobs(model, seq, 0.7)[-n - L:-n]
        assert torch.allclose(sampled, ro.sampler_logp[i][ro.mask[i]], atol=1e-4)
    # The gradient-bearing forward over prompt + completion sees the same policy.
    logp, mask, ent = rl.policy_logprobs(model, ro, temperature=0.7)
    assert torch.allclose(logp, ro.sampler_logp * mask, atol=1e-4)
    assert ent.shape == mask.shape and not ent.requires_grad


def test_rows_stop_at_eos_and_pad_after(tiny):
    model, tok = tiny
    # Every token counts as EOS here: each row ends after its first token, the rest is pad.
    ro = rl.sample_groups(model, [[5, 6, 7]], group_size=2, max_new_tokens=4, temperature=1.0,
                          pad_id=tok.pad_token_id, eos_ids=range(len(tok)))
    assert ro.stop == ["eos", "eos"] and ro.lengths.tolist() == [1, 1]
    assert (ro.sampler_logp[:, 1:] == 0).all()


def test_policy_gradient_only_on_completion_tokens(tiny):
    """With completions of different lengths, only logits that predict a real completion
    token get a gradient (never prompt positions, padding, or what follows)."""
    model, tok = tiny
    ro = rl.teacher_rollouts([[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14]], tok.pad_token_id)
    captured = {}

    logp, mask, _ = rl.policy_logprobs(logits_capture(model, captured), ro, with_entropy=False)
    loss, _ = rl.clipped_surrogate(logp, logp.detach(), torch.tensor([1.0, -1.0]), mask,
                                   eps_low=0.2, eps_high=0.28)
    loss.backward()
    has_grad = captured["logits"].grad.abs().sum(-1) > 0
    assert has_grad.tolist() == [[True, True, True], [True, False, False]]


def test_ema_update_formula():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = rl.frozen_copy(model)
    for p, e in zip(model.parameters(), ema.parameters()):
        assert torch.equal(p, e)
    old = [e.clone() for e in ema.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    rl.ema_update(ema, model, tau=0.9)
    for o, p, e in zip(old, model.parameters(), ema.parameters()):
        assert torch.allclose(e, 0.9 * o + 0.1 * p)
