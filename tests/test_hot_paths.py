"""The faster hot paths give what the plain versions gave: incremental stop detection equals
decoding the whole generation, one softmax gives the drawn token's log-prob, one log-softmax
gives the policy log-probs and entropy, and the stop-token prefilter misses no stop."""
import random

import torch
import torch.nn.functional as F

from lab import rl
from lab.entropy import entropy_from_logp, token_entropy
from lab.evaluation.engine import StopCriteria
from lab.models import load_model, smol_tokenizer
from lab.sampling import sample_next, stop_token_mask


def test_incremental_stop_check_matches_full_decode():
    tok = smol_tokenizer()
    text = "Let's think: 12 × 3 = 36. Café naïve — 日本語. The answer is (B).\n\nQuestion: next"
    rng = random.Random(0)
    streams = [tok.encode(text, add_special_tokens=False)]
    streams += [[rng.randrange(len(tok)) for _ in range(20)] for _ in range(3)]
    stopped = 0
    for ids in streams:
        for stops, regex in [(("\n\nQuestion:",), None), ((), r"answer is \(([A-E])\)"), (("日本",), None)]:
            crit = StopCriteria(tok, 2, stops, regex)
            for k in range(1, len(ids) + 1):
                got = bool(crit(torch.tensor([[0, 0] + ids[:k]]))[0])
                assert got == crit.row_done(tok.decode(ids[:k], skip_special_tokens=True)), (k, stops)
                if got:
                    stopped += 1
                    break
    assert stopped >= 3     # the hand-written text hits all three


def test_sample_next_logprob_is_the_drawn_tokens():
    torch.manual_seed(0)
    logits = torch.randn(6, 500) * 3
    logits[0, 7] = float("-inf")
    for temperature in (0.0, 0.7, 1.0):
        tok, lp = sample_next(logits, temperature)
        ref = F.log_softmax(logits / (temperature or 1.0), -1).gather(-1, tok[:, None])[:, 0]
        assert torch.allclose(lp, ref, atol=1e-5)
        assert bool((tok != 7).all())
    assert torch.equal(sample_next(logits, 0.0)[0], logits.argmax(-1))


def test_entropy_from_logp_handles_masked_logits():
    logits = torch.randn(3, 4, 50)
    logits[0, 0, :10] = float("-inf")
    lp = F.log_softmax(logits, -1)
    p = lp.exp()
    ref = -(torch.where(p > 0, p * lp, torch.zeros_like(p))).sum(-1)
    assert torch.allclose(entropy_from_logp(lp), ref, atol=1e-6)
    assert torch.allclose(token_entropy(logits), ref, atol=1e-6)


def test_stop_token_mask_keeps_every_token_that_can_close():
    tok = smol_tokenizer()
    mask = stop_token_mask(tok, ("</think>",))
    closing = tok.encode("a</think>", add_special_tokens=False)[-1]
    assert bool(mask[closing]) and 0 < int(mask.sum()) < len(tok) // 100
    assert bool(stop_token_mask(tok, ("fin é",)).all())      # non-ASCII end: no prefilter


def test_policy_logprobs_match_cross_entropy_and_token_entropy():
    lm = load_model("tiny-random", seed=0)
    prompts = [[5, 6, 7], [8, 9]]
    ro = rl.teacher_rollouts(prompts, [[10, 11, 12], [13]], pad_id=0)
    logp, mask, ent = rl.policy_logprobs(lm.model, ro, temperature=0.7)
    ids = torch.cat([ro.prompt_ids, ro.tokens[:, :-1]], 1)
    attn = torch.cat([ro.prompt_mask, ro.mask[:, :-1].long()], 1)
    logits = lm.model(input_ids=ids, attention_mask=attn,
                      position_ids=rl.positions_from_mask(attn)).logits[:, -ro.tokens.shape[1]:] / 0.7
    ref = -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ro.tokens.reshape(-1),
                           reduction="none").view_as(ro.tokens)
    assert torch.allclose(logp, ref * mask, atol=1e-4)
    assert torch.allclose(ent, token_entropy(logits), atol=1e-4)
