"""RPT (lab/objectives/rpt.py) and next-token reasoning accuracy (lab/nt_reasoning.py):
the byte-match reward, group advantages with dynamic sampling, the entropy filter."""
from __future__ import annotations

import math

import pytest
import torch

from lab import rl
from lab.config import RunConfig
from lab.objectives import get_objective
from lab.objectives import rpt as rpt_mod
from lab.objectives.rpt import (
    RPT,
    extract_prediction,
    rpt_reward,
    token_bytes,
    topk_entropy,
)

torch.set_num_threads(1)
SEQ = 32


@pytest.fixture(scope="module")
def loaded():
    from lab.models import load_model
    return load_model("tiny-random")


@pytest.fixture(scope="module")
def tok(loaded):
    return loaded.tokenizer


@pytest.fixture()
def make(loaded):
    def build(**params):
        params.setdefault("warmup_steps_format", 0)   # RL from the first step unless a test asks
        model = rl.frozen_copy(loaded.model).requires_grad_(True).train()
        cfg = RunConfig(objective="rpt", model="tiny-random", seq_len=SEQ, batch_size=2,
                        params=dict(group_size=4, max_new_tokens=6, **params)).validate()
        return RPT(model, loaded.tokenizer, RPT.Params(**cfg.params), cfg, torch.device("cpu"))
    return build


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, 5000, (2, SEQ), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


# ---- 1. the reward -----------------------------------------------------------------------

# (true continuation text, completion, expected reward)
REWARD_CASES = [
    ("correct single token", " the cat sat", "<think>it is an article</think> \\boxed{ the}", 1.0),
    ("leading space is part of the token", " the cat sat", "</think>\\boxed{the}", 0.0),
    ("multi-token, ends on a boundary", " the cat sat", "</think>\\boxed{ the cat}", 1.0),
    ("correct prefix, not on a boundary", " the cat sat", "</think>\\boxed{ the c}", 0.0),
    ("wrong token", " the cat sat", "</think>\\boxed{ a}", 0.0),
    ("no box", " the cat sat", "<think>hmm</think> the", 0.0),
    ("empty box", " the cat sat", "</think>\\boxed{}", 0.0),
    ("several boxes: the last counts", " the cat sat", "</think>\\boxed{ a} no, \\boxed{ the}", 1.0),
    ("several boxes: the last counts (wrong)", " the cat sat", "</think>\\boxed{ the} no, \\boxed{ a}", 0.0),
    ("boxes inside the think block do not count", " the cat sat", "<think>\\boxed{ the}</think>\\boxed{ a}", 0.0),
    ("unterminated think block", " the cat sat", "<think>\\boxed{ the}", 0.0),
    ("no think block: last box of the completion", " the cat sat", "so \\boxed{ the}", 1.0),
    ("nested braces", " {a{b}} end", "</think>\\boxed{ {a{b}}}", 1.0),
    ("nested braces, cut inside a token", " {a{b}} end", "</think>\\boxed{ {a{b}}", 0.0),
    ("a lone '{' token", "{a{b}} end", "</think>\\boxed{{}", 1.0),
    ("a lone '}' token", "} end", "</think>\\boxed{}}", 1.0),
    ("unfinished last box", " the cat sat", "</think>\\boxed{ a} \\boxed{ the", 0.0),
    ("multi-byte char split over three tokens", " 日本語", "</think>\\boxed{ 日}", 1.0),
    ("two multi-byte chars", " 日本語", "</think>\\boxed{ 日本}", 1.0),
    ("multi-byte char, wrong", " 日本語", "</think>\\boxed{ 月}", 0.0),
]


@pytest.mark.parametrize("name,truth,completion,expected", REWARD_CASES, ids=[c[0] for c in REWARD_CASES])
def test_reward_cases(tok, name, truth, completion, expected):
    ids = tok.encode(truth, add_special_tokens=False)
    reward, _ = rpt_reward(completion, token_bytes(tok, ids))
    assert reward == expected


def test_token_bytes_are_raw_bytes(tok):
    ids = tok.encode(" 日本語", add_special_tokens=False)
    tb = token_bytes(tok, ids)
    assert b"".join(tb) == " 日本語".encode("utf-8")
    assert len(tb[0]) == 2 and tb[0] == b" \xe6"               # ' ' + first byte of 日
    assert "\ufffd" in tok.decode([ids[0]])                    # why a decode round trip is wrong
    assert extract_prediction("</think> \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"


def test_format_warmup_completion_is_a_correct_answer(tok):
    """The synthetic warm-up completion boxes the shortest whole-character run of true
    tokens, so it earns reward 1 (also when x_t ends inside a UTF-8 character)."""
    for truth in (" the cat sat", " 日本語", "{a{b}} end"):
        cont = token_bytes(tok, tok.encode(truth, add_special_tokens=False))
        answer = rpt_mod.answer_text(cont)
        assert truth.startswith(answer) and "\ufffd" not in answer
        assert rpt_reward(rpt_mod.format_completion("ctx", answer), cont) == (1.0, answer)


# ---- 2. group advantages and dynamic sampling ------------------------------------------------

def test_group_normalised_advantages_and_dropped_groups(make, monkeypatch):
    obj = make(entropy_threshold=0.0)
    scripted = iter([1.0, 0.0, 0.0, 0.0,    # window 0: one right -> kept
                     0.0, 0.0, 0.0, 0.0])   # window 1: all equal -> dropped
    monkeypatch.setattr(rpt_mod, "rpt_reward", lambda text, cont: (next(scripted), " x"))
    out = obj.step(_batch(), record=2)
    assert out.metrics["rpt/dropped_groups"] == 1.0
    assert out.metrics["reward/mean"] == pytest.approx(1 / 8)
    adv = [r["advantage"] for r in out.thought_records]
    assert adv[:4] == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-4)   # (r − mean)/(std + ε)
    assert adv[4:] == [0.0] * 4
    assert [r["extra"]["dropped"] for r in out.thought_records] == [False] * 4 + [True] * 4
    assert out.metrics["rl/clip_frac"] == 0.0                            # exactly on-policy
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.model.parameters())


def test_all_groups_dropped_still_gives_a_backpropagating_zero_loss(make, monkeypatch):
    obj = make(entropy_threshold=0.0)
    monkeypatch.setattr(rpt_mod, "rpt_reward", lambda text, cont: (0.0, None))
    out = obj.step(_batch(), record=1)
    assert out.metrics["rpt/dropped_groups"] == 2.0 and out.metrics["rpt/format_fail"] == 1.0
    assert out.loss.item() == 0.0
    out.loss.backward()
    rec = out.thought_records[0]
    assert rec["kind"] == "rpt" and {"text", "prediction", "target", "reward", "advantage"} <= set(rec)
    assert "context" in rec["extra"]


# ---- 3. the entropy filter ------------------------------------------------------------------

def test_topk_entropy_hand_distribution():
    # uniform over 32 tokens, nothing elsewhere
    logits = torch.full((100,), -math.inf)
    logits[:32] = 0.0
    assert topk_entropy(logits, 16).item() == pytest.approx(math.log(16))        # renormalised
    assert topk_entropy(logits, 16, renormalise=False).item() == pytest.approx(0.5 * math.log(32))
    # four tokens 1/2, 1/4, 1/8, 1/8: top-16 covers everything, so both readings agree
    p = torch.tensor([0.5, 0.25, 0.125, 0.125])
    logits = torch.full((100,), -math.inf)
    logits[:4] = p.log()
    h = -(p * p.log()).sum().item()
    assert topk_entropy(logits, 16).item() == pytest.approx(h)
    assert topk_entropy(logits, 16, renormalise=False).item() == pytest.approx(h)


def test_entropy_filter_selects_only_hard_positions(make):
    obj = make(entropy_threshold=1.0, positions_per_doc=3, min_context=4)
    V = len(obj.tokenizer)
    hard = {(0, 10), (0, 20), (1, 7)}                 # targets x_t the proxy finds hard

    class Proxy(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            B, T = input_ids.shape
            logits = torch.zeros(B, T, V)
            logits[..., 0] = 50.0                     # peaked: entropy ~ 0
            for b, t in hard:
                logits[b, t - 1] = 0.0                # uniform: renormalised top-16 = log 16
            return type("Out", (), {"logits": logits})()

    obj.proxy = Proxy()
    chosen, _, ent, stats = obj._select(_batch()["input_ids"])
    assert {(b, t) for b, t, _ in chosen} == hard
    assert all(h == pytest.approx(math.log(16)) for _, _, h in chosen)
    assert stats["rpt/filtered_positions"] == 1.5     # 3 passing positions over 2 windows


# ---- the objective end to end -----------------------------------------------------------------

def test_rpt_step_warmup_and_frozen_proxy(make):
    assert get_objective("rpt") is RPT
    obj = make(warmup_steps_format=1)
    assert obj.proxy is not obj.raw_model
    opt = torch.optim.SGD(obj.model.parameters(), lr=1.0)
    out = obj.step(_batch(), record=2)                 # format warm-up: supervised NLL
    assert out.metrics["rpt/warmup"] == 1.0 and out.loss.requires_grad
    out.loss.backward()
    opt.step()
    obj.after_optimizer_step()
    assert not any(p.requires_grad for p in obj.proxy.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(obj.proxy.parameters(), obj.raw_model.parameters()))
    out = obj.step(_batch(1), record=2)                # now RL
    for name in ("reward/mean", "rpt/format_fail", "rpt/accuracy", "thought/length",
                 "rpt/filtered_positions", "rpt/dropped_groups"):
        assert name in out.metrics, name
    out.loss.backward()
    assert len(out.thought_records) == 2 * 4 and len(out.token_records) == 2 * SEQ
    assert obj.state_tensors()["opt_steps"].item() == 1


def test_nt_reasoning_eval_and_store(tmp_path):
    from lab.corpora import load_documents
    from lab.nt_reasoning import evaluate_nt_reasoning, write_nt_reasoning
    from lab.store import Store
    docs = load_documents("builtin", n_docs=3)
    res = evaluate_nt_reasoning("tiny-random", "tiny-random", docs, n_positions=2, seed=0,
                                max_new_tokens=4, max_doc_tokens=48)
    assert set(res["levels"]) == {"easy", "medium", "hard"}
    for stats in res["levels"].values():
        assert stats["n"] == 2 and 0 <= stats["reasoning_accuracy"] <= 1
        assert stats["box_failure_rate"] == 1.0          # a random model never boxes
    store = Store(tmp_path)
    write_nt_reasoning(store, res)
    evals = store.query("SELECT mode, n_items FROM evals WHERE benchmark = 'nt-reasoning' ORDER BY mode")
    assert sorted(evals["mode"]) == sorted(f"{k}/{lv}" for k in ("reasoning", "standard")
                                           for lv in ("easy", "medium", "hard"))
    assert store.query("SELECT count(*) AS n FROM eval_items")["n"][0] == 6 * 2


def test_format_warm_up_runs_at_its_own_learning_rate(make):
    obj = make(warmup_steps_format=2, warmup_lr=1e-3)
    obj.cfg.lr = 1e-6
    assert obj.lr_multiplier() == pytest.approx(1000.0)       # 1e-3 during the warm-up
    obj.after_optimizer_step()
    assert obj.lr_multiplier() == pytest.approx(1000.0)
    obj.after_optimizer_step()
    assert obj.lr_multiplier() == 1.0                         # RL at the run's lr
    assert make(warmup_steps_format=2, warmup_lr=0.0).lr_multiplier() == 1.0
