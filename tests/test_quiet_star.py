"""Quiet-STaR: the parallel-thought mask, the init identity with NTP, the reward arithmetic,
gradients into the thought path, vocabulary masking, inference with thoughts, and the head
checkpoint. Tiny random models only (a few seconds in all)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lab.config import RunConfig
from lab.errors import LabError
from lab.models import load_model
from lab.objectives.ntp import NTP
from lab.objectives.quiet_star import (
    HEAD_NAME,
    QSHead,
    QuietSTaR,
    QuietSTaRParams,
    load_head,
    new_head,
    run_thoughts,
    sample_tokens,
    think,
    think_text,
    thought_rewards,
)
from lab.objectives.quiet_star.passes import base_pass, pack_positions, thought_passes
from lab.store import TABLE_COLUMNS

torch.set_num_threads(1)
CPU = torch.device("cpu")
SMALL = dict(n_ahead=5, n_ahead_talk=3, n_passes=2)   # 2 sampled tokens per thought


@pytest.fixture(scope="module")
def models():
    cache: dict = {}

    def get(preset: str):
        if preset not in cache:
            lm = load_model(preset)
            lm.model.eval()   # GPT-2 has dropout: keep the comparisons deterministic
            cache[preset] = lm
        return cache[preset]
    return get


def batch(seed: int = 0, B: int = 2, L: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 5000, (B, L), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def objective(lm, L: int = 12, rho: float = 1.0, **params) -> QuietSTaR:
    cfg = RunConfig(objective="quiet-star", model="tiny-random", seq_len=L, rho=rho)
    return QuietSTaR(lm.model, lm.tokenizer, QuietSTaRParams(**{**SMALL, **params}), cfg, CPU)


def plain_hidden(model, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Final-norm hidden states and logits of an ordinary causal forward over embeds [1, T, h]."""
    out = model(inputs_embeds=embeds)
    hidden = model.base_model(inputs_embeds=embeds).last_hidden_state
    return hidden[0], out.logits[0]


# ---- 1. the property that proves the mask right ---------------------------------------------

@pytest.mark.parametrize("preset,attn", [("tiny-random", "sdpa"), ("tiny-random", "eager"),
                                         ("tiny-random-qwen2", "sdpa"), ("tiny-random-gpt2", "sdpa")])
def test_parallel_thoughts_equal_sequential_forward(models, preset, attn):
    lm = models(preset)
    model = lm.model
    model.set_attn_implementation(attn)
    try:
        head = new_head(model, lm.tokenizer)
        with torch.no_grad():   # distinct meta vectors, so a swapped <start>/<end> would show
            head.end.add_(torch.randn_like(head.end) * 0.01)
        b = batch(1, B=2, L=10)
        n_ahead, n_talk, P = 5, 3, 2
        n_pos = 10 - n_talk
        with torch.no_grad():
            th = run_thoughts(model, head, b["input_ids"], b["attention_mask"], n_pos=n_pos,
                              n_ahead=n_ahead, n_talk=n_talk, n_passes=P, n_vocab=len(lm.tokenizer),
                              generator=torch.Generator().manual_seed(0), keep_all=True)
            assert len(th.pass_hidden) == n_ahead + n_talk - 2
            emb = model.get_input_embeddings()
            lm_head = model.get_output_embeddings()
            for s in range(2):
                for i in range(P):
                    for t in (0, 3, n_pos - 1):
                        x = b["input_ids"][s]
                        seq = torch.cat([emb(x[:t + 1]), head.meta("start")[None],
                                         emb(th.thought_ids[s, i, t]), head.meta("end")[None],
                                         emb(x[t + 1:t + n_talk])])        # x_{t+1}, x_{t+2}
                        ref_h, ref_logits = plain_hidden(model, seq[None])
                        got = torch.stack([th.base_hidden[s, t]] +
                                          [h[s * P + i, t] for h in th.pass_hidden])
                        torch.testing.assert_close(got, ref_h[t:], atol=1e-4, rtol=1e-4)
                        torch.testing.assert_close(lm_head(got), ref_logits[t:], atol=1e-4, rtol=1e-4)
            # the talk states are the passes from <end> on
            torch.testing.assert_close(th.talk_hidden[0].reshape(2 * P, n_pos, -1),
                                       th.pass_hidden[n_ahead - 2])
    finally:
        model.set_attn_implementation("sdpa")


# ---- 2. at init: mixed == base, loss == NTP terms --------------------------------------------

@pytest.mark.parametrize("rho", [1.0, 0.3])
def test_init_matches_ntp(models, rho):
    lm = models("tiny-random")
    b = batch(2, L=12)
    qs = objective(lm, rho=rho)
    torch.manual_seed(0)
    out = qs.step(b, record=0)
    cfg = RunConfig(seq_len=12, rho=rho)
    ntp = NTP(lm.model, lm.tokenizer, NTP.Params(), cfg, CPU).step(b, record=0)
    torch.testing.assert_close(torch.tensor(out.metrics["loss/base_nll"]), ntp.loss.detach())
    assert out.metrics["nll"] == pytest.approx(ntp.metrics["nll"], rel=1e-6)
    assert out.metrics["reward/mean"] == 0 and out.metrics["loss/policy"] == 0
    assert out.metrics["mix/w_mean"] == 0 and out.metrics["mix/nll_gain"] == pytest.approx(0, abs=1e-6)
    if rho == 1.0:
        # w = 0: the mixed prediction for talk step j at t is the base one at t + j, so the mixed
        # term is the mean base NLL over the windows x_{t+1..t+3}, t = 0..L-4.
        with torch.no_grad():
            logits = lm.model(input_ids=b["input_ids"]).logits[:, :-1]
            nll = F.cross_entropy(logits.transpose(1, 2), b["input_ids"][:, 1:], reduction="none")
        n_pos = 12 - 3
        mixed = torch.stack([nll[:, j:j + n_pos] for j in range(3)]).mean()
        torch.testing.assert_close(out.loss.detach(), 0.5 * ntp.loss.detach() + 0.5 * mixed)


def test_talk_steps_predict_the_right_tokens(models, monkeypatch):
    """With w = 1 the mixed prediction is the post-thought one: talk step j at position t must be
    the plain forward over [x_<=t, <start>, thought, <end>, x_t+1..t+j] predicting x_{t+j+1}."""
    import lab.objectives.quiet_star.objective as qsmod
    lm = models("tiny-random")
    qs = objective(lm)
    with torch.no_grad():
        qs.qs_head.mlp[-1].bias.fill_(1.0)
    seen, original = {}, qsmod.thought_passes

    def spy(*args, **kwargs):
        seen["th"] = original(*args, **kwargs)
        return seen["th"]
    monkeypatch.setattr(qsmod, "thought_passes", spy)
    b = batch(5)
    out = qs.step(b, record=1)
    x, emb, head = b["input_ids"][0], lm.model.get_input_embeddings(), qs.qs_head
    with torch.no_grad():
        for row in out.thought_records:
            t, i = row["extra"]["after"], row["idx"]
            if t not in (0, 4, 8):
                continue
            seq = torch.cat([emb(x[:t + 1]), head.meta("start")[None],
                             emb(seen["th"].thought_ids[0, i, t]), head.meta("end")[None],
                             emb(x[t + 1:t + 3])])
            logp = torch.log_softmax(lm.model(inputs_embeds=seq[None]).logits[0, -3:], -1)
            ref = [-logp[j, x[t + 1 + j]].item() for j in range(3)]
            assert row["extra"]["talk_mixed_nll"] == pytest.approx(ref, rel=1e-4, abs=1e-4)
            assert row["weight"] == 1.0


# ---- 3. reward arithmetic --------------------------------------------------------------------

def test_thought_rewards_baseline_and_clamp():
    logp = torch.tensor([[-1.0, -3.0], [-2.0, -2.0], [-5.0, -1.0]], requires_grad=True)
    r = thought_rewards(logp)
    assert torch.equal(r, torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]))
    assert not r.requires_grad
    three = thought_rewards(torch.tensor([[-1.0, -2.0, -6.0]]))
    assert torch.allclose(three, torch.tensor([[2.0, 1.0, 0.0]]))
    assert torch.equal(thought_rewards(torch.tensor([[-4.0]])), torch.zeros(1, 1))  # 1 thought


# ---- 4. gradients reach the thought path; reserved vocabulary never sampled -------------------

def test_gradient_reaches_thoughts_after_mixing_turns_on(models):
    lm = models("tiny-random")
    qs = objective(lm)
    head = qs.qs_head
    b = batch(3)
    torch.manual_seed(0)
    # at init w = 0: the thought path gets no gradient, the head's last layer does
    qs.step(b, record=0).loss.backward()
    assert head.start.grad is None or head.start.grad.abs().sum() == 0
    assert head.mlp[-1].bias.grad.abs().item() > 0
    lm.model.zero_grad(set_to_none=True)
    head.zero_grad(set_to_none=True)
    with torch.no_grad():
        head.mlp[-1].bias.fill_(0.5)
    out = qs.step(b, record=0)
    out.loss.backward()
    assert out.metrics["mix/w_mean"] == pytest.approx(0.5)
    for p in (head.start, head.end, head.mlp[-1].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert out.metrics["reward/mean"] > 0 and out.metrics["loss/policy"] != 0
    before = head.start.detach().clone()
    torch.optim.SGD([head.start], lr=1.0).step()
    assert not torch.equal(before, head.start.detach())
    lm.model.zero_grad(set_to_none=True)


def test_reserved_vocab_rows_are_never_sampled():
    logits = torch.zeros(64, 10)
    logits[:, 8:] = 50.0      # rows past the tokenizer, overwhelmingly likely if not masked
    tok = sample_tokens(logits[..., :8], 1.0, torch.Generator().manual_seed(0))
    assert tok.max() < 8
    # the uniform draw matches the distribution: a near one-hot row always gives its token
    peaked = torch.full((32, 8), -30.0)
    peaked[:, 5] = 0
    assert (sample_tokens(peaked) == 5).all()


def test_padding_rows_of_lm_head_are_excluded(models):
    from transformers import AutoModelForCausalLM, LlamaConfig
    tok = models("tiny-random").tokenizer
    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, vocab_size=len(tok) + 8,
                      tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    biased = torch.nn.Linear(16, len(tok) + 8, bias=True)   # padding rows: huge logits
    with torch.no_grad():
        biased.weight.copy_(model.lm_head.weight)
        biased.bias.zero_()
        biased.bias[len(tok):] = 1e3
    model.lm_head = biased
    qs = QuietSTaR(model, tok, QuietSTaRParams(**SMALL), RunConfig(seq_len=12), CPU)
    assert qs.n_vocab == len(tok)
    th = run_thoughts(model, qs.qs_head, batch()["input_ids"], batch()["attention_mask"],
                      n_pos=9, n_ahead=5, n_talk=3, n_passes=2, n_vocab=qs.n_vocab)
    assert th.thought_ids.max() < len(tok)
    assert th.base_logits[..., len(tok):].mean() > th.base_logits[..., :len(tok)].max()


# ---- step output and records -----------------------------------------------------------------

def test_step_records_and_metrics(models):
    lm = models("tiny-random-qwen2")
    qs = objective(lm, L=16)
    b = batch(4, B=3, L=16)
    out = qs.step(b, record=2)
    for name in ("loss/base_nll", "loss/mixed_nll", "loss/policy", "reward/mean", "reward/std",
                 "mix/w_mean", "thought/length", "nll", "entropy/mean"):
        assert name in out.metrics
    assert out.metrics["thought/length"] == 2
    assert out.tokens == 48 and out.flops > 0
    assert len(out.token_records) == 2 * 16
    n_pos = 16 - 3
    assert len(out.thought_records) == 2 * n_pos * 2
    row = out.thought_records[0]
    assert set(row) <= set(TABLE_COLUMNS["thoughts"])
    assert row["kind"] == "quiet-star" and row["n_tokens"] == 2 and row["position"] == 1
    assert row["target"] == lm.tokenizer.decode([int(b["input_ids"][0, 1])])
    assert len(row["extra"]["talk_mixed_nll"]) == 3
    # tokens table convention: row t is token x_t, the thought that predicted it sits in extra
    by_pos = {r["position"]: r for r in out.token_records if r["sample"] == 0}
    assert by_pos[1]["extra"]["mixed_nll"] == pytest.approx(
        (out.thought_records[0]["mixed_nll"] + out.thought_records[1]["mixed_nll"]) / 2)
    assert by_pos[1]["nll"] == pytest.approx(row["base_nll"], rel=1e-5)


def test_params_problems_and_unsupported_model(models):
    cfg = RunConfig(seq_len=16)
    assert QuietSTaRParams().problems(RunConfig(seq_len=256)) == []
    bad = QuietSTaRParams(n_ahead=2, n_ahead_talk=0, n_passes=0, mixing="max",
                          reinforce_temperature=0).problems(cfg)
    assert len(bad) == 5
    assert QuietSTaRParams(n_ahead=12, n_ahead_talk=4).problems(cfg)   # 16 >= seq_len
    with pytest.raises(LabError, match="n_ahead"):
        objective(models("tiny-random"), n_ahead=1)
    from transformers import AutoModelForSeq2SeqLM, T5Config
    t5 = AutoModelForSeq2SeqLM.from_config(T5Config(vocab_size=128, d_model=16, d_ff=32, d_kv=8,
                                                    num_layers=1, num_heads=2))
    with pytest.raises(LabError, match="decoder-only"):
        QuietSTaR(t5, models("tiny-random").tokenizer, QuietSTaRParams(**SMALL), cfg, CPU)


# ---- 5. inference with thoughts, the corrupted control, the checkpointed head ----------------

def test_think_text_and_corrupted_control(models, tmp_path):
    lm = models("tiny-random-gpt2")
    head = new_head(lm.model, lm.tokenizer, n_ahead=6)
    with torch.no_grad():
        head.mlp[-1].bias.fill_(0.3)
    text = "Tom has 3 apples and buys 4 more."
    n_tok = len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    rows = think_text(lm.model, lm.tokenizer, head, text, n_passes=2, seed=1)
    assert len(rows) == n_tok
    first = rows[0]
    assert first["position"] == 1 and first["target"] is not None and rows[-1]["target"] is None
    assert 0 <= first["base_prob"] <= 1 and 0 <= first["mixed_prob"] <= 1
    assert first["w"] == pytest.approx(0.3, abs=1e-5)
    # n_ahead = 6 (from the head): <start>, 3 sampled tokens, <end>
    assert len(first["thoughts"]) == 2 and all(t["n_tokens"] == 3 for t in first["thoughts"])
    again = think_text(lm.model, lm.tokenizer, head, text, n_passes=2, seed=1)
    assert [r["thoughts"] for r in again] == [r["thoughts"] for r in rows]
    other = think_text(lm.model, lm.tokenizer, head, text, n_passes=2, seed=2)
    assert [r["thoughts"] for r in other] != [r["thoughts"] for r in rows]
    bad = think_text(lm.model, lm.tokenizer, head, text, n_passes=2, seed=1, corrupted=True)
    assert [len(r["thoughts"]) for r in bad] == [2] * n_tok
    assert all(t["n_tokens"] == 3 for r in bad for t in r["thoughts"])
    assert [r["thoughts"] for r in bad] != [r["thoughts"] for r in rows]
    # a w = 0 head leaves the prediction unchanged
    plain = think_text(lm.model, lm.tokenizer, new_head(lm.model, lm.tokenizer), text, n_ahead=4)
    assert plain[0]["mixed_prob"] == pytest.approx(plain[0]["base_prob"], rel=1e-5)

    # the head round-trips through the checkpoint file the training loop writes
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in head.state_dict().items()},
              str(tmp_path / f"extra_{HEAD_NAME}.safetensors"))
    loaded = load_head(tmp_path, lm.model)
    assert isinstance(loaded, QSHead) and int(loaded.n_ahead) == 6
    for k, v in head.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    from_state = think_text(lm.model, lm.tokenizer, head.state_dict(), text, n_passes=2, seed=1)
    assert [r["thoughts"] for r in from_state] == [r["thoughts"] for r in rows]
    with pytest.raises(LabError, match="not trained with Quiet-STaR"):
        load_head(tmp_path / "missing", lm.model)


def test_think_eval_contract_and_padding(models, tmp_path):
    """think(loaded, ids, mask, corrupt=, generator=) -> mixed logits [B, T, V] (the contract
    of docs/evaluation.md), the same for a row alone and inside left/right-padded batches."""
    from lab.models import LoadedModel
    lm = models("tiny-random")
    x = batch(6, B=1, L=7)["input_ids"]
    pad = lm.tokenizer.pad_token_id
    zero = new_head(lm.model, lm.tokenizer, n_ahead=5)
    out = think(lm, x, torch.ones_like(x), head=zero, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 7, lm.model.config.vocab_size)
    torch.testing.assert_close(out, lm.model(input_ids=x).logits)       # w = 0: the base model

    head = new_head(lm.model, lm.tokenizer, n_ahead=5)
    with torch.no_grad():
        head.mlp[-1].bias.fill_(1.0)
    kw = dict(head=head, temperature=1e-6)    # near-greedy thoughts: identical across batches
    alone = think(lm, x, torch.ones_like(x), **kw)
    assert not torch.allclose(alone, lm.model(input_ids=x).logits, atol=1e-3)
    left = torch.cat([torch.full((1, 3), pad), x], 1)
    right = torch.cat([x, torch.full((1, 3), pad)], 1)
    mask_l = torch.cat([torch.zeros(1, 3), torch.ones(1, 7)], 1).long()
    both = think(lm, torch.cat([left, right]), torch.cat([mask_l, mask_l.flip(1)]), **kw)
    torch.testing.assert_close(both[0, 3:], alone[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both[1, :7], alone[0], atol=1e-4, rtol=1e-4)
    two = think(lm, x, torch.ones_like(x), n_passes=2, **kw)   # log of the mean probability
    torch.testing.assert_close(two.exp().sum(-1), torch.ones(1, 7))

    # without `head`, the head comes from the folder the checkpoint model was loaded from
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in head.state_dict().items()},
              str(tmp_path / f"extra_{HEAD_NAME}.safetensors"))
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    ckpt = load_model(str(tmp_path))
    from_ckpt = think(ckpt, x, torch.ones_like(x), temperature=1e-6)
    torch.testing.assert_close(from_ckpt, alone, atol=1e-4, rtol=1e-4)
    with pytest.raises(LabError, match="checkpoint"):
        think(LoadedModel(model=new_tiny_llama(), tokenizer=lm.tokenizer, spec="x"), x,
              torch.ones_like(x))


def new_tiny_llama():
    from transformers import AutoModelForCausalLM, LlamaConfig
    return AutoModelForCausalLM.from_config(LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=64)).eval()


def test_sigmoid_mixing_starts_near_base(models):
    lm = models("tiny-random")
    head = new_head(lm.model, lm.tokenizer, mixing="sigmoid")
    h = torch.randn(4, 64)
    mixed, w = head(h, torch.randn(4, 64))
    assert torch.allclose(w, torch.full_like(w, 0.01), atol=1e-6)
    assert dataclasses.asdict(QuietSTaRParams())["mixing"] == "unbounded"


# ---- 6. issue 12's arms: thoughts at forking positions only; random thoughts, trained ---------

def test_forking_thought_passes_equal_sequential_forward(models):
    """Thought slots at chosen positions only (rows choosing different numbers of them: row 0's
    five spread over two thought rows, padding slots): each real slot's passes equal a plain
    forward over [x_<=t, <start>, thought, <end>, x_t+1..] — the parallel-thought property,
    forking mode."""
    lm = models("tiny-random-qwen2")
    model = lm.model
    head = new_head(model, lm.tokenizer)
    with torch.no_grad():
        head.end.add_(torch.randn_like(head.end) * 0.01)
    b = batch(7, B=2, L=10)
    chosen = torch.zeros(2, 7, dtype=torch.bool)
    chosen[0, [0, 1, 3, 4, 6]] = True
    chosen[1, [5]] = True
    rows, positions, real = pack_positions(chosen)         # M = 3: 3 rows, 9 slots (M = 5: 10)
    assert rows.tolist() == [0, 0, 1] and positions.tolist() == [[0, 1, 3], [4, 6, 4], [5, 5, 5]]
    assert real.tolist() == [[True] * 3, [True, True, False], [True, False, False]]
    n_ahead, n_talk, P = 5, 3, 2
    with torch.no_grad():
        base = base_pass(model, b["input_ids"], b["attention_mask"])
        th = thought_passes(model, head, base, b["input_ids"], b["attention_mask"], rows, positions,
                            n_ahead=n_ahead, n_talk=n_talk, n_passes=P, n_vocab=len(lm.tokenizer),
                            generator=torch.Generator().manual_seed(0), keep_all=True)
        assert th.thought_ids.shape == (3, P, 3, n_ahead - 3)
        assert all(h.shape[:2] == (3 * P, 3) for h in th.pass_hidden)   # 9 slots per pass, not 14
        emb = model.get_input_embeddings()
        for r in range(3):
            s = int(rows[r])
            for i in range(P):
                for m in range(int(real[r].sum())):
                    t, x = int(positions[r, m]), b["input_ids"][s]
                    seq = torch.cat([emb(x[:t + 1]), head.meta("start")[None],
                                     emb(th.thought_ids[r, i, m]), head.meta("end")[None],
                                     emb(x[t + 1:t + n_talk])])
                    ref_h, _ = plain_hidden(model, seq[None])
                    got = torch.stack([th.base_hidden[s, t]] + [h[r * P + i, m] for h in th.pass_hidden])
                    torch.testing.assert_close(got, ref_h[t:], atol=1e-4, rtol=1e-4)


def test_pack_positions_uses_the_fewest_slots():
    chosen = torch.zeros(3, 20, dtype=torch.bool)
    chosen[0, :9] = chosen[1, :4] = chosen[2, :5] = True     # 18 chosen, widest row 9
    rows, positions, real = pack_positions(chosen)
    # M from ceil(18 / 3) = 6 to 9: 6 gives 4 rows = 24 slots, 7 gives 28, 9 (a row each) 27
    assert positions.shape == (4, 6) and rows.tolist() == [0, 0, 1, 2]
    assert real.sum() == 18 and positions[1].tolist() == [6, 7, 8, 6, 6, 6]
    rows, positions, real = pack_positions(torch.zeros(2, 5, dtype=torch.bool))
    assert real.sum() == 0 and positions.shape == (1, 1)


def spy_passes(monkeypatch) -> dict:
    import lab.objectives.quiet_star.objective as qsmod
    seen, original = {}, qsmod.thought_passes

    def spy(*args, **kwargs):
        seen["th"] = original(*args, **kwargs)
        return seen["th"]
    monkeypatch.setattr(qsmod, "thought_passes", spy)
    return seen


def test_forking_positions_are_the_top_entropy_ones(models, monkeypatch):
    """thought_positions=forking: the positions that think are the top thought_share of the
    micro-batch by the base entropy of the next token (ranked here by hand from a plain
    forward), no thought exists anywhere else, and the passes shrink with the share."""
    lm = models("tiny-random")
    seen = spy_passes(monkeypatch)
    b = batch(8, B=2, L=16)
    n_talk, n_pos = SMALL["n_ahead_talk"], 16 - SMALL["n_ahead_talk"]
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=b["input_ids"]).logits.float(), -1)
    ent = -(logp.exp() * logp).sum(-1)[:, :n_pos]                  # entropy of x_{t+1}, t < n_pos
    ranked = sorted(((ent[s, t].item(), s, t) for s in range(2) for t in range(n_pos)), reverse=True)
    k = round(0.25 * 2 * n_pos)                                    # 6 of 26

    qs = objective(lm, L=16, thought_positions="forking", thought_share=0.25)
    out = qs.step(b, record=2)
    th = seen["th"]
    # tiny-random's entropies are nearly tied (all close to log V), so the ranking is checked up
    # to float noise between this plain forward and the objective's own entropy computation.
    expected = {(r["sample"], r["position"] - 1) for r in out.thought_records}
    assert len(expected) == k
    chosen = [ent[s, t].item() for s, t in expected]
    others = [e for e, s, t in ranked if (s, t) not in expected]
    assert min(chosen) >= max(others) - 1e-5
    # every slot the passes compute (padding included) is a chosen position: no thought elsewhere
    computed = {(int(th.rows[r]), int(t)) for r in range(len(th.rows)) for t in th.positions[r]}
    assert computed == expected
    # the fewest slots: never more than one thought row per text row would take
    counts = [sum(1 for e in expected if e[0] == s) for s in range(2)]
    assert th.positions.numel() <= 2 * max(counts)
    # records: thoughts (and token extras) only at the chosen positions, with their entropy
    assert {(r["sample"], r["position"] - 1) for r in out.thought_records} == expected
    assert len(out.thought_records) == k * SMALL["n_passes"]
    for r in out.thought_records:
        assert r["extra"]["entropy"] == pytest.approx(ent[r["sample"], r["position"] - 1].item(), rel=1e-4)
        assert r["extra"]["selection"] == "forking"
    thought_rows = {(r["sample"], r["position"] - 1) for r in out.token_records
                    if "thought" in (r.get("extra") or {})}
    assert thought_rows == expected
    assert out.metrics["thought/share"] == pytest.approx(k / (2 * n_pos))
    # the same batch with every position thinking: 13 slots per row, more FLOPs
    every = objective(lm, L=16).step(b, record=0)
    assert seen["th"].positions.shape == (2, n_pos) and every.metrics["thought/share"] == 1.0
    assert out.flops < 0.6 * every.flops
    assert out.metrics["loss/base_nll"] == pytest.approx(every.metrics["loss/base_nll"], rel=1e-6)


def test_random_thoughts_have_no_policy_term(models, monkeypatch):
    """thought_content=random: uniform random thought tokens drawn fresh each step, no log π
    (so no policy gradient even with a huge policy_weight), the loss is 0.5·base + 0.5·mixed,
    and the saved head makes inference think random thoughts too."""
    lm = models("tiny-random")
    seen = spy_passes(monkeypatch)
    qs = objective(lm, thought_content="random", policy_weight=1e6)
    with torch.no_grad():
        qs.qs_head.mlp[-1].bias.fill_(0.5)            # thoughts count: rewards are non-zero
    b = batch(9)
    out = qs.step(b, record=0)
    first = seen["th"]
    assert first.policy_logp is None
    assert out.metrics["loss/policy"] == 0 and out.metrics["reward/mean"] > 0
    torch.testing.assert_close(out.loss.detach(), torch.tensor(
        0.5 * out.metrics["loss/base_nll"] + 0.5 * out.metrics["loss/mixed_nll"]))
    out.loss.backward()
    assert qs.qs_head.mlp[-1].bias.grad.abs().item() > 0       # the head still learns
    qs.step(b, record=0)
    assert not torch.equal(first.thought_ids, seen["th"].thought_ids)   # fresh every step
    lm.model.zero_grad(set_to_none=True)
    # inference: with near-greedy sampling real thoughts repeat across calls; random ones do not
    head = qs.qs_head
    assert bool(head.random_thoughts)
    x = b["input_ids"][:1]
    kw = dict(head=head, temperature=1e-6)
    a = think(lm, x, torch.ones_like(x), generator=torch.Generator().manual_seed(1), **kw)
    c = think(lm, x, torch.ones_like(x), generator=torch.Generator().manual_seed(2), **kw)
    assert not torch.allclose(a, c)
    head.random_thoughts.fill_(False)
    a = think(lm, x, torch.ones_like(x), generator=torch.Generator().manual_seed(1), **kw)
    c = think(lm, x, torch.ones_like(x), generator=torch.Generator().manual_seed(2), **kw)
    torch.testing.assert_close(a, c)


def test_arm_params_are_checked():
    cfg = RunConfig(seq_len=16)
    bad = QuietSTaRParams(n_ahead=4, n_ahead_talk=2, thought_positions="some", thought_share=0,
                          thought_content="noise").problems(cfg)
    assert len(bad) == 3 and all(any(k in p for p in bad) for k in
                                 ("thought_positions", "thought_share", "thought_content"))
