"""Precision: `auto` resolves by hardware; bf16 is autocast over fp32 weights and AdamW state;
the run records what it used; the shared train_step reports phases through lab.profiling."""
import re

import pytest
import torch

from lab import precision, profiling
from lab.errors import LabError
from lab.models import load_model
from lab.objectives.ntp import NTP, NTPParams
from lab.store import Store
from lab.train import make_accelerator, make_optimizer, train, train_step

from conftest import tiny_config


def test_auto_picks_bf16_only_where_native(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert precision.resolve("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    assert precision.resolve("auto", "cpu") == "no"
    assert precision.resolve("bf16", "cpu") == "bf16"       # asked for explicitly: honoured
    assert precision.resolve("no", "cuda") == "no"
    with pytest.raises(LabError, match="fp16 mixed precision needs a GPU"):
        precision.resolve("fp16", "cpu")
    with pytest.raises(LabError, match="mixed_precision must be one of"):
        precision.resolve("fp8", "cpu")


def test_cpu_flags_come_from_cpuinfo():
    text = open("/proc/cpuinfo").read()
    expected = {f for f in precision.CPU_BF16_FLAGS if f" {f}" in text}
    assert set(precision.cpu_bf16_flags()) == expected


def test_config_defaults_to_auto_and_rejects_unknown():
    assert tiny_config().validate().mixed_precision == "auto"
    with pytest.raises(LabError, match="mixed_precision must be one of"):
        tiny_config(mixed_precision="fp8").validate()


def _tiny_step(mp: str):
    cfg = tiny_config(mixed_precision=mp).validate()
    acc = make_accelerator(cfg.mixed_precision)
    lm = load_model("tiny-random", seed=0)
    model = lm.model
    obj = NTP(model, lm.tokenizer, NTPParams(), cfg, acc.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(trainable, cfg.lr, cfg.weight_decay)
    model, opt = acc.prepare(model, opt)
    obj.bind(model, {})
    linear_out = []
    first_linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda m, i, o: linear_out.append(o.dtype))
    ids = torch.randint(0, 100, (2, 16))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    rec = profiling.Recorder()
    with profiling.recording(rec):
        res = train_step(obj, [batch], opt, acc, trainable, grad_accum=1, grad_clip=1.0, step=1, lr=cfg.lr)
    return res, linear_out, trainable, opt, rec


def test_bf16_is_autocast_over_fp32_master_weights():
    res, linear_out, trainable, opt, rec = _tiny_step("bf16")
    assert linear_out == [torch.bfloat16]                  # the matmuls ran in bf16
    assert all(p.dtype == torch.float32 for p in trainable)
    state = [s for s in opt.state.values() if s]
    assert state and all(s["exp_avg"].dtype == torch.float32 for s in state)
    assert res.tokens == 32 and res.loss > 0
    assert set(rec.times) == {"step", "backward", "optimizer"} and all(v > 0 for v in rec.times.values())


def test_fp32_runs_in_fp32_after_a_bf16_run_in_the_same_process():
    _tiny_step("bf16")
    res, linear_out, *_ = _tiny_step("no")
    assert linear_out == [torch.float32]


@pytest.mark.parametrize("mp,label", [("bf16", "bf16 autocast"), ("no", "fp32")])
def test_run_records_its_precision(data_dir, mp, label):
    store = Store(data_dir).init()
    cfg = tiny_config(mixed_precision=mp, max_steps=1, n_samples=0).validate()
    rid = store.create_run(config=cfg.to_dict())
    train(cfg, rid, store)
    assert re.search(rf"threads?( each)?, {label}\)$", store.get_run(rid)["device"])


def test_profiling_is_a_no_op_outside_recording():
    calls = []

    @profiling.timed("x")
    def f(n):
        profiling.count("n", n)
        calls.append(n)
        return n + 1

    assert f(1) == 2
    rec = profiling.Recorder()
    with profiling.recording(rec):
        assert f(2) == 3
    assert f(3) == 4
    assert calls == [1, 2, 3] and rec.counts == {"n": 2.0} and set(rec.times) == {"x"}
