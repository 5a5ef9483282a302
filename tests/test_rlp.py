"""RLP (lab/objectives/rlp.py): reward, RLOO, EMA teacher, where the gradient goes, and the
first exactly on-policy update."""
from __future__ import annotations

import pytest
import torch

from conftest import logits_capture
import torch.nn.functional as F

from lab import rl
from lab.config import RunConfig
from lab.errors import LabError
from lab.objectives import get_objective
from lab.objectives.rlp import RLP

torch.set_num_threads(1)
SEQ = 32


@pytest.fixture(scope="module")
def loaded():
    from lab.models import load_model
    return load_model("tiny-random")


@pytest.fixture()
def make(loaded):
    """A fresh RLP objective on a fresh copy of the tiny model."""
    def build(**params):
        model = rl.frozen_copy(loaded.model).requires_grad_(True).train()
        cfg = RunConfig(objective="rlp", model="tiny-random", seq_len=SEQ, batch_size=2,
                        params=dict(group_size=3, max_thought_tokens=6, **params)).validate()
        return RLP(model, loaded.tokenizer, RLP.Params(**cfg.params), cfg, torch.device("cpu"))
    return build


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, 5000, (2, SEQ), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _capture_rollouts(monkeypatch) -> list:
    seen = []
    real = rl.sample_groups

    def spy(*a, **kw):
        ro = real(*a, **kw)
        seen.append(ro)
        return ro
    monkeypatch.setattr(rl, "sample_groups", spy)
    return seen


def _logp_last(model, seq: list[int]) -> float:
    """log p(seq[-1] | seq[:-1]) from a plain forward."""
    with torch.no_grad():
        logits = model(torch.tensor([seq[:-1]])).logits[0, -1].float()
    return F.log_softmax(logits, -1)[seq[-1]].item()


def test_registry_and_params_validation():
    assert get_objective("rlp") is RLP
    with pytest.raises(LabError, match="group_size"):
        RunConfig(objective="rlp", model="tiny-random", seq_len=SEQ,
                  params={"group_size": 1}).validate()


def test_step_returns_a_loss_that_backpropagates(make):
    obj = make()
    out = obj.step(_batch(), record=2)
    out.loss.backward()
    grads = [p.grad for p in obj.model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    for name in ("reward/mean", "rlp/gain_vs_init", "rlp/nll_no_thought", "rlp/nll_thought",
                 "rlp/top1_thought", "thought/length", "rl/clip_frac", "rl/adv_std", "entropy/mean"):
        assert name in out.metrics, name
    assert len(out.thought_records) == 2 * 3           # 2 windows × 1 position × G
    rec = out.thought_records[0]
    assert rec["kind"] == "rlp" and {"text", "n_tokens", "reward", "advantage", "base_nll",
                                     "mixed_nll", "target", "extra"} <= set(rec)
    assert "context" in rec["extra"] and "logp_gain" in rec["extra"]
    assert len(out.token_records) == 2 * SEQ
    assert out.flops > 0 and out.tokens == 2 * SEQ


def test_reward_equals_hand_computation(make, monkeypatch):
    obj = make(tau=0.5)
    opt = torch.optim.SGD(obj.model.parameters(), lr=0.5)
    obj.step(_batch(1), record=0).loss.backward()      # first step: φ set from θ
    opt.step()
    obj.after_optimizer_step()                         # now φ ≠ θ
    seen = _capture_rollouts(monkeypatch)
    out = obj.step(_batch(2), record=2)
    ro, ids, G = seen[0], _batch(2)["input_ids"], 3
    rewards = [r["reward"] for r in out.thought_records]
    for k, rec in enumerate(out.thought_records):
        b, t = rec["sample"], rec["position"]
        context, x_t = obj.head + ids[b, :t].tolist(), int(ids[b, t])
        thought = ro.row_tokens(k)
        close = [] if ro.stop[k] == "stop" else obj.close_ids
        with_thought = _logp_last(obj.raw_model, context + obj.open_ids + thought + close + [x_t])
        no_thought = _logp_last(obj.ema, context + obj.open_ids + obj.close_ids + [x_t])
        assert rec["reward"] == pytest.approx(with_thought - no_thought, abs=1e-4)
        assert rec["mixed_nll"] == pytest.approx(-with_thought, abs=1e-4)
    # RLOO advantages of those rewards
    r = torch.tensor(rewards)
    adv = torch.tensor([x["advantage"] for x in out.thought_records])
    assert torch.allclose(adv, rl.rloo_advantages(r, G), atol=1e-5)


def test_ema_lazy_init_then_every_optimizer_step(make):
    obj = make(tau=0.9)
    assert obj.ema is None
    out = obj.step(_batch(), record=0)
    for p, e in zip(obj.raw_model.parameters(), obj.ema.parameters()):
        assert torch.equal(p, e)                       # φ ← θ on the first batch
    old = [e.clone() for e in obj.ema.parameters()]
    opt = torch.optim.SGD(obj.model.parameters(), lr=1.0)
    out.loss.backward()
    opt.step()
    obj.after_optimizer_step()
    changed = False
    for o, p, e in zip(old, obj.raw_model.parameters(), obj.ema.parameters()):
        assert torch.allclose(e, 0.9 * o + 0.1 * p.detach(), atol=1e-6)
        changed |= not torch.equal(o, e)
    assert changed
    # the teacher round-trips through a checkpoint
    state = obj.state_tensors()
    fresh = make(tau=0.9)
    fresh.load_state_tensors(state)
    for a, b in zip(obj.ema.parameters(), fresh.ema.parameters()):
        assert torch.equal(a, b)


def test_gradient_reaches_only_thought_tokens(make, monkeypatch):
    """The gradient-bearing forward covers prompt + thought only: logits get a gradient
    exactly where they predict a sampled thought token; x_t (and the appended </think>) are
    never targets, so the true next token carries no loss."""
    import lab.objectives.rlp as rlp_mod
    monkeypatch.setattr(rlp_mod, "THINK_CLOSE", "e")   # thoughts end early, lengths vary
    obj = make()
    seen = _capture_rollouts(monkeypatch)
    captured = {}

    obj.model = logits_capture(obj.raw_model, captured)                 # as the loop's bind() would
    out = obj.step(_batch(), record=0)
    out.loss.backward()
    ro = seen[0]
    assert len(set(ro.lengths.tolist())) > 1           # the test covers ragged thoughts
    L = captured["logits"].shape[1]
    grad_at = captured["logits"].grad.abs().sum(-1) > 0
    assert torch.equal(grad_at, ro.mask[:, :L])         # thought tokens, and nothing else
    # What was fed: prompt + thought minus its last token. x_t is not in the forward.
    assert torch.equal(captured["ids"], torch.cat([ro.prompt_ids, ro.tokens[:, :L - 1]], 1))


def test_first_update_is_exactly_on_policy(make):
    obj = make()
    out = obj.step(_batch(), record=0)
    assert out.metrics["rl/clip_frac"] == 0.0
    assert out.metrics["rl/ratio_mean"] == pytest.approx(1.0)
    # The training forward reproduces the sampler's log-probs: the rollout policy is θ.
    assert out.metrics["rl/sampler_logp_diff"] < 1e-4


def test_forking_positions_are_the_policys_top_entropy_targets(make, loaded):
    """position_sampling=forking: positions come from the top position_share of each window by
    the current policy's entropy of x_t (hand-ranked here from a plain forward); with a share
    that leaves exactly positions_per_doc candidates the choice is fully determined."""
    obj = make(position_sampling="forking", position_share=0.05, positions_per_doc=2, min_context=8)
    b = _batch(3)
    ids = b["input_ids"]
    with torch.no_grad():
        logp = F.log_softmax(obj.raw_model(input_ids=ids).logits.float(), -1)
    ent = -(logp.exp() * logp).sum(-1)                   # ent[:, t-1] = entropy of x_t
    n = SEQ - 8                                          # targets t = 8..31
    assert max(2, round(0.05 * n)) == 2
    expected = [(r, t) for r in range(2)
                for t in sorted((torch.topk(ent[r, 7:SEQ - 1], 2).indices + 8).tolist())]
    positions, window_ent = obj._positions(ids)
    assert positions == expected
    torch.testing.assert_close(window_ent, ent[:, :-1], atol=1e-4, rtol=1e-4)
    # a larger share: positions drawn from the top 25 % (6 of 24), never outside it
    wide = make(position_sampling="forking", position_share=0.25, positions_per_doc=2)
    for seed in range(3):
        torch.manual_seed(seed)
        for r, t in wide._positions(ids)[0]:
            assert t in (torch.topk(ent[r, 7:SEQ - 1], 6).indices + 8).tolist()
    out = obj.step(b, record=1)
    assert {(r["sample"], r["position"]) for r in out.thought_records} == {e for e in expected if e[0] == 0}
    assert out.metrics["rlp/position_entropy"] > out.metrics["rlp/window_entropy"]
    uniform = make()
    torch.manual_seed(0)
    assert out.flops > 0 and "rlp/position_entropy" not in uniform.step(b, record=0).metrics
    with pytest.raises(LabError, match="position_sampling"):
        RunConfig(objective="rlp", model="tiny-random", seq_len=SEQ,
                  params={"position_sampling": "entropy"}).validate()
