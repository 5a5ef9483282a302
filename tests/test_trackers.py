"""Tracker export (`report_to`, issue 16): TensorBoard offline, its event files hold the same
per-step loss as DuckDB; off by default; a tracker that cannot work is refused up front."""
from __future__ import annotations

import pytest

from lab import trackers
from lab.errors import LabError
from lab.store import Store
from lab.train import train

from conftest import tiny_config


def _scalars(folder) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    files = sorted(folder.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {folder}"
    for f in files:   # the run's scalars; accelerate writes its hparams to a file of their own
        acc = EventAccumulator(str(f))
        acc.Reload()
        if "loss" in acc.Tags()["scalars"]:
            return {e.step: e.value for e in acc.Scalars("loss")}
    raise AssertionError(f"no event file under {folder} holds a 'loss' scalar")


def test_tensorboard_event_files_hold_the_logged_loss(data_dir):
    store = Store(data_dir).init()
    cfg = tiny_config(max_steps=4, report_to="tensorboard").validate()
    assert cfg.report_to == ["tensorboard"]
    rid = store.create_run(config=cfg.to_dict())
    train(cfg, rid, store)
    logged = store.metrics([rid], ["loss"]).sort_values("step")
    in_db = dict(zip(logged["step"].astype(int), logged["value"].astype(float)))
    in_tb = _scalars(trackers.folder(data_dir, rid))
    assert sorted(in_tb) == sorted(in_db) == [1, 2, 3, 4]
    for step, value in in_db.items():
        assert in_tb[step] == pytest.approx(value, rel=1e-6)


def test_trackers_are_off_by_default(data_dir):
    store = Store(data_dir).init()
    cfg = tiny_config(max_steps=1).validate()
    assert cfg.report_to == []
    rid = store.create_run(config=cfg.to_dict())
    train(cfg, rid, store)
    assert not trackers.folder(data_dir, rid).exists()


def test_unknown_or_missing_trackers_are_refused_before_the_job(monkeypatch):
    with pytest.raises(LabError, match="unknown tracker 'tensorbored'"):
        tiny_config(report_to="tensorbored").validate()
    monkeypatch.setitem(trackers.TRACKERS, "wandb", "no_such_package_for_thoughtlab_tests")
    with pytest.raises(LabError, match=r"wandb is not installed here \(pip install no_such_package"):
        tiny_config(report_to="wandb").validate()
