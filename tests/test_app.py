"""AppTest (headless Streamlit, no browser) for every page, on a data folder filled by real
tiny training runs."""
from __future__ import annotations

import pytest
from conftest import app_page
from streamlit.testing.v1 import AppTest

from lab.config import RunConfig
from lab.objectives import available
from lab.store import Store
from lab.train import train

PAGES = ["pages/launch.py", "pages/runs.py", "pages/forking.py", "pages/thoughts.py", "pages/heatmap.py",
         "pages/playground.py", "pages/benchmarks.py", "pages/nt_accuracy.py"]


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    d = tmp_path_factory.mktemp("appdata")
    store = Store(d).init()
    ids = {}
    for objective in ["ntp"] + [o for o in ("quiet-star", "rlp", "rpt") if o in available()]:
        cfg = RunConfig.from_dict(dict(objective=objective, model="tiny-random", corpus="builtin",
                                       corpus_docs=60, seq_len=32, batch_size=2, max_steps=2, lr=1e-3,
                                       sample_every=1, n_samples=1, checkpoint_every=0,
                                       name=f"{objective} demo")).validate()
        rid = store.create_run(config=cfg.to_dict(), status="running")
        train(cfg, rid, store)
        store.update_run(rid, status="finished")
        ids[objective] = rid
    return d, ids


def page(path: str, data_dir, monkeypatch, **query) -> AppTest:
    return app_page(path, data_dir, monkeypatch, timeout=60, **query)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_without_exception(path, filled, monkeypatch):
    d, _ = filled
    at = page(path, d, monkeypatch)
    assert not at.exception, at.exception
    assert at.title


@pytest.mark.parametrize("path", [p for p in PAGES[1:] if p != "pages/playground.py"])
def test_pages_on_an_empty_data_folder_say_what_to_do(path, tmp_path, monkeypatch):
    at = page(path, tmp_path, monkeypatch)
    assert not at.exception
    assert any("Launch" in i.value for i in at.info)


def test_runs_page_lists_runs_and_shows_curves(filled, monkeypatch):
    d, ids = filled
    at = page("pages/runs.py", d, monkeypatch, run=ids["ntp"])
    assert not at.exception
    table = at.dataframe[0].value
    assert set(ids.values()) <= set(table["id"])
    assert at.multiselect(key="runs_chosen").value == [ids["ntp"]]
    assert "loss" in at.multiselect(key="runs_metrics").value
    at.selectbox(key="runs_detail").set_value(ids["ntp"]).run()
    next(t for t in at.text_input if t.label == "Name").set_value("renamed run")
    next(t for t in at.text_input if t.label.startswith("Tags")).set_value("baseline, demo")
    next(b for b in at.button if b.label == "Save").click().run()
    assert not at.exception
    run = Store(d).get_run(ids["ntp"])
    assert run["name"] == "renamed run" and run["tags"] == "baseline, demo"


def test_forking_page_colours_tokens_and_marks_top_20_percent(filled, monkeypatch):
    d, ids = filled
    at = page("pages/forking.py", d, monkeypatch, run=ids["ntp"])
    assert not at.exception
    html = "".join(m.value for m in at.markdown)
    assert html.count("<span title=\"pos") == 32
    assert html.count("#7b1fa2;font-weight:600;\"") == round(0.2 * 31)   # token spans, not the legend


def test_launch_page_validates_and_shows_command(filled, monkeypatch):
    d, _ = filled
    at = page("pages/launch.py", d, monkeypatch)
    assert "python -m lab train --objective ntp --model smollm2-135m" in at.code[0].value
    at.number_input(key="f_max_steps").set_value(7).run()
    assert "--max-steps 7" in at.code[0].value
    at.radio(key="f_model_source").set_value("Folder or hub id").run()
    at.text_input(key="f_model_text").set_value("/no/such/model").run()
    at.button[0].click().run()       # Check settings
    assert any("does not exist" in e.value for e in at.error)
    assert Store(d).list_runs()["model"].str.contains("/no/such").sum() == 0


def test_launch_page_starts_a_job(filled, monkeypatch, tmp_path):
    at = page("pages/launch.py", tmp_path, monkeypatch)
    at.selectbox(key="preset").set_value("quick-cpu").run()
    at.number_input(key="f_max_steps").set_value(2).run()
    at.number_input(key="f_seq_len").set_value(32).run()
    at.button[1].click().run()       # Launch
    assert not at.error, [e.value for e in at.error]
    assert any("Started run" in s.value for s in at.success)
    runs = Store(tmp_path).list_runs()
    assert len(runs) == 1 and runs["model"].iloc[0] == "tiny-random"
    from jobs.manager import cancel
    cancel(runs["id"].iloc[0], tmp_path)


def test_objective_preset_fills_objective_and_its_settings(tmp_path, monkeypatch):
    at = page("pages/launch.py", tmp_path, monkeypatch)
    at.selectbox(key="preset").set_value("quiet-star-cpu").run()
    assert not at.exception
    assert at.selectbox(key="f_objective").value == "quiet-star"
    assert at.number_input(key="p_quiet-star_n_ahead").value == 8
    cmd = at.code[0].value
    assert "--objective quiet-star" in cmd and "--param n_ahead=8" in cmd and "--batch-size 1" in cmd
    assert not at.warning


def test_a_preset_leaves_nothing_behind_from_the_one_before(tmp_path, monkeypatch):
    from lab.config import PRESETS, RunConfig
    at = page("pages/launch.py", tmp_path, monkeypatch)
    at.selectbox(key="preset").set_value("rpt-cpu").run()
    assert at.selectbox(key="f_objective").value == "rpt"
    assert at.number_input(key="p_rpt_group_size").value == 8
    at.number_input(key="p_rpt_group_size").set_value(3).run()        # a user's own changes
    at.number_input(key="p_rpt_top_k").set_value(5).run()
    quick = "quick-cpu"
    at.selectbox(key="preset").set_value(quick).run()
    assert not at.exception
    assert at.selectbox(key="f_objective").value == "ntp"               # as `--preset` gives
    expected = {**RunConfig().to_dict(), **PRESETS[quick]}
    assert at.number_input(key="f_n_samples").value == expected["n_samples"]
    assert at.number_input(key="f_warmup_steps").value == expected["warmup_steps"]
    at.selectbox(key="preset").set_value("rpt-cpu").run()
    assert at.number_input(key="p_rpt_group_size").value == 8           # preset value again
    assert at.number_input(key="p_rpt_top_k").value == 16               # default restored
