"""The shared loop, in-process, on tiny-random: metrics, samples, checkpoints, resume, mask."""
import json

import pytest
import torch

from lab.checkpoint import list_checkpoints
from lab.config import RunConfig
from lab.entropy import forking_mask, masked_mean
from lab.errors import LabError
from lab.store import Store
from lab.train import batch_indices, train


def tiny_cfg(**kw) -> RunConfig:
    base = dict(objective="ntp", model="tiny-random", corpus="builtin", corpus_docs=60, seq_len=32,
                batch_size=2, max_steps=4, lr=1e-3, warmup_steps=1, sample_every=2, n_samples=1,
                checkpoint_every=2)
    base.update(kw)
    return RunConfig.from_dict(base).validate()


def test_ntp_loop_logs_metrics_samples_and_checkpoints(data_dir):
    store = Store(data_dir).init()
    cfg = tiny_cfg()
    rid = store.create_run(config=cfg.to_dict())
    result = train(cfg, rid, store)
    assert result.steps == 4
    m = store.metrics([rid])
    for name in ("loss", "lr", "grad_norm", "tokens_per_s", "entropy/mean", "entropy/p80",
                 "entropy/share_below_0.01"):
        assert m[m["name"] == name]["step"].tolist() == [1, 2, 3, 4], name
    assert (m.groupby("step")["flops"].first().diff().dropna() > 0).all()  # cumulative FLOPs grow
    toks = store.tokens(rid)
    assert sorted(toks["step"].unique()) == [1, 2, 4]
    assert len(toks[toks["step"] == 2]) == 32 and toks["entropy"].notna().sum() == 3 * 31
    assert [s for s, _ in list_checkpoints(data_dir, rid)] == [2, 4]
    ck = list_checkpoints(data_dir, rid)[-1][1]
    assert (ck / "model.safetensors").exists() and (ck / "optimizer.safetensors").exists()
    assert not list(ck.glob("*.bin")) and not list(ck.glob("*.pt"))


def test_resume_continues_from_last_complete_checkpoint(data_dir):
    """An interrupted run resumed from step 2 ends with the same weights as an uninterrupted one."""
    store = Store(data_dir).init()
    cfg = tiny_cfg(max_steps=4, checkpoint_every=2)
    full = store.create_run(config=cfg.to_dict())
    train(cfg, full, store)

    part = store.create_run(config=cfg.to_dict())
    stop_after = {"n": 0}

    def should_stop() -> bool:
        stop_after["n"] += 1
        return stop_after["n"] > 3      # steps 1..3 run, step 3 is lost (checkpoint at 2)
    train(cfg, part, store, should_stop=should_stop)
    assert [s for s, _ in list_checkpoints(data_dir, part)] == [2]
    assert store.metrics([part], ["loss"])["step"].max() == 3
    train(cfg, part, store)             # resume
    a = store.metrics([full], ["loss"]).set_index("step")["value"]
    b = store.metrics([part], ["loss"]).set_index("step")["value"]
    assert b.index.tolist() == [1, 2, 3, 4]           # step 3 re-logged once, not twice
    assert torch.allclose(torch.tensor(a.values), torch.tensor(b.values), atol=1e-5)


def test_batch_order_is_deterministic_and_covers_epochs():
    a = [batch_indices(10, s, 0, 4, 1, seed=1).tolist() for s in range(5)]
    b = [batch_indices(10, s, 0, 4, 1, seed=1).tolist() for s in range(5)]
    assert a == b
    first_epoch = sum(a, [])[:10]
    assert sorted(first_epoch) == list(range(10))


def test_forking_mask_is_global_and_normalised_by_selected_count():
    ent = torch.tensor([[0.1, 3.0, 0.2, 0.0], [2.0, 0.3, 1.0, 5.0]])
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)   # 7 valid
    mask = forking_mask(ent, valid, rho=0.3)                                # round(2.1) = 2
    # Global top-2 over the batch: 5.0 and 3.0, even though one sequence gets both none and one.
    assert mask.tolist() == [[False, True, False, False], [False, False, False, True]]
    loss = torch.tensor([[1.0, 4.0, 1.0, 9.0], [1.0, 1.0, 1.0, 2.0]])
    assert masked_mean(loss, mask).item() == pytest.approx(3.0)           # (4 + 2) / 2, not / 7
    assert forking_mask(ent, valid, 1.0).tolist() == valid.tolist()
    assert not forking_mask(ent, valid, 1.0)[0, 3]                          # padding never selected


def test_rho_restricts_ntp_loss(data_dir):
    store = Store(data_dir).init()
    cfg = tiny_cfg(rho=0.2, max_steps=1, checkpoint_every=0)
    rid = store.create_run(config=cfg.to_dict())
    train(cfg, rid, store)
    share = store.metrics([rid], ["selected_share"])["value"].iloc[0]
    assert share == pytest.approx(0.2, abs=0.02)


@pytest.mark.parametrize("change,message", [
    (dict(max_steps=0), "max_steps must be at least 1"),
    (dict(max_steps=-5), "max_steps must be at least 1"),
    (dict(lr=0), "lr (learning rate) must be positive"),
    (dict(lr=-1e-3), "lr (learning rate) must be positive"),
    (dict(batch_size=0), "batch_size must be at least 1"),
    (dict(seq_len=4), "seq_len must be between"),
    (dict(rho=0), "rho"),
    (dict(rho=1.5), "rho"),
    (dict(objective="magic"), "Unknown objective 'magic'"),
    (dict(device="tpu"), "device must be one of"),
    (dict(params={"nope": 1}), "ntp params"),
])
def test_impossible_settings_are_rejected(change, message):
    base = dict(objective="ntp", model="tiny-random")
    base.update(change)
    with pytest.raises(LabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig.from_dict(base).validate()


def test_config_types_and_unknown_keys():
    with pytest.raises(LabError, match="max_steps must be a whole number"):
        RunConfig.from_dict({"max_steps": "ten"})
    with pytest.raises(LabError, match="Unknown setting"):
        RunConfig.from_dict({"learning_rate": 1e-3})
    cfg = RunConfig.from_dict({"max_steps": "20", "lr": "1e-4", "trust_remote_code": "false"})
    assert cfg.max_steps == 20 and cfg.lr == 1e-4 and cfg.trust_remote_code is False
    assert json.loads(cfg.to_json())["max_steps"] == 20


def test_flop_budget_ends_the_run_early(data_dir):
    store = Store(data_dir).init()
    cfg = tiny_cfg(max_steps=50, checkpoint_every=0)
    probe = store.create_run(config=cfg.to_dict())
    train(tiny_cfg(max_steps=1, checkpoint_every=0), probe, store)
    per_step = store.metrics([probe], ["loss"])["flops"].iloc[0]
    cfg = tiny_cfg(max_steps=50, checkpoint_every=0, max_flops=per_step * 2.6)
    rid = store.create_run(config=cfg.to_dict())
    result = train(cfg, rid, store)
    assert result.steps == 3          # a 4th step would overshoot 2.6 steps' budget by > half a step
    assert store.get_run(rid)["max_steps"] == 3
    assert [s for s, _ in list_checkpoints(data_dir, rid)] == [3]


def test_objective_params_are_coerced_to_their_types():
    cfg = RunConfig.from_dict(dict(objective="rpt", params={"warmup_lr": "1e-4", "group_size": "4"})).validate()
    assert cfg.params["warmup_lr"] == 1e-4 and cfg.params["group_size"] == 4
    with pytest.raises(LabError, match="rpt group_size must be a whole number"):
        RunConfig.from_dict(dict(objective="rpt", params={"group_size": "many"})).validate()


@pytest.mark.parametrize("objective,params,expect", [
    ("quiet-star", {"n_ahead": 4, "n_ahead_talk": 2, "n_passes": 1}, "thought pass 1/4"),
    ("rlp", {"group_size": 2, "max_thought_tokens": 4}, "sampling: token 1/4 of"),
])
def test_a_long_step_reports_where_it_stands(data_dir, monkeypatch, capsys, objective, params, expect):
    """Inside one step: the thought pass or rollout token, in the log and the run's phase; the
    phase goes back to 'training' after the step. (Notes are throttled: 0 s here.)"""
    import lab.progress
    monkeypatch.setattr(lab.progress, "NOTE_EVERY_S", 0.0)
    store = Store(data_dir).init()
    cfg = tiny_cfg(objective=objective, params=params, max_steps=2, checkpoint_every=0, n_samples=0)
    phases = []
    update = store.update_run
    monkeypatch.setattr(store, "update_run", lambda rid, **kw: (phases.append(kw.get("phase")), update(rid, **kw))[1])
    rid = store.create_run(config=cfg.to_dict())
    train(cfg, rid, store)
    out = capsys.readouterr().out
    assert f"[train] step 1/2: {expect}" in out and f"[train] step 2/2: {expect}" in out
    assert "step 2/2: backward" in out
    notes = [i for i, p in enumerate(phases) if p and p.startswith("step 2/2: ")]
    assert notes and phases[notes[-1] + 1] == "training"
    assert lab.progress._step_receiver is None                   # nothing listens after the run
