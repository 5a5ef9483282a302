"""The Benchmarks page: AppTest on a data folder holding a finished tiny experiment (two seeds
per arm, after a shared pretraining), the experiment launcher, and one real-browser walk
(bars, report export, screenshot test-artifacts/benchmarks.png)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from browser import browser_page, lab_server, shot, wait_idle
from conftest import ARTIFACTS, app_page
from streamlit.testing.v1 import AppTest
from test_report import tiny_experiment

from jobs.manager import cancel
from lab import experiments as ex
from lab.store import Store

PAGE = "pages/benchmarks.py"


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    return tiny_experiment(tmp_path_factory)


def page(data_dir, monkeypatch, **query) -> AppTest:
    return app_page(PAGE, data_dir, monkeypatch, **query)


def traces(at: AppTest) -> list[dict]:
    out = []
    for chart in at.get("plotly_chart"):
        out += json.loads(chart.proto.spec)["data"]
    return out


def test_experiment_results_render_seeds_bands_and_the_summary(filled, monkeypatch):
    d, exp = filled
    at = page(d, monkeypatch, experiment=exp)
    assert not at.exception, at.exception
    assert at.selectbox(key="bm_experiment").value == exp
    heads = [h.value for h in at.subheader]
    for h in ("The answer", "Compute: what was matched", "Scores", "Deltas, pooled over seeds",
              "Training curves", "Items that flipped", "Export"):
        assert h in heads, h
    assert any(h.startswith("Quiet-STaR") for h in heads)
    answer = " ".join(m.value for m in at.markdown)
    assert "After the same pretraining (1 NTP steps of tiny-random)" in answer
    assert "Quiet-STaR vs NTP on math-test (accuracy)" in answer and "2 seeds" in answer

    drawn = traces(at)
    bars = [t for t in drawn if t["type"] == "bar"]
    assert {t["name"] for t in bars} >= {"pretrained base", "NTP", "Quiet-STaR", "Quiet-STaR +thoughts",
                                         "Quiet-STaR +corrupted", "NTP @ steps of Quiet-STaR"}
    assert all(t["error_y"]["visible"] for t in bars)
    seeds = [t for t in drawn if t["type"] == "scatter" and t.get("name", "").endswith("(seeds)")]
    assert seeds and all(len(t["x"]) == 2 * len({*t["x"]}) for t in seeds)   # one dot per seed
    assert any(t.get("fill") == "toself" for t in drawn)                     # a band across seeds
    # A plain-language takeaway under every chart: 2 score charts, 2 forest plots (own score and
    # the NLL metrics) vs NTP, the thought-mode plots, and each training curve.
    notes = [c.value for c in at.caption if c.value.startswith("Takeaway: ")]
    assert len(notes) == len(at.get("plotly_chart")), notes
    assert any("comparisons, " in n for n in notes) and any("first → last" in n for n in notes)
    frames = [f.value for f in at.dataframe]
    pooled = next(f for f in frames if "seed sd" in f.columns)
    assert {"seed sd", "verdict", "CI low", "CI high"} <= set(pooled.columns)
    assert set(pooled["matched"]) == {"FLOPs", "steps"} and (pooled["seeds"] == 2).all()

    at.button(key="bm_exp_report_build").click().run()
    assert not at.exception and not at.error
    name, saved = at.session_state["bm_exp_report"]
    assert name.endswith(".html") and Path(saved) == d / "exports" / name
    assert "Each arm vs the reference (NTP)" in Path(saved).read_text("utf-8")

    at.radio(key="bm_against").set_value("base").run()
    assert not at.exception
    pooled = next(f.value for f in at.dataframe if "seed sd" in f.value.columns)
    assert set(pooled["vs"]) == {"pretrained base"}
    at.radio(key="bm_view").set_value("Individual evals").run()
    assert not at.exception


def test_empty_data_folder_says_what_to_do(tmp_path, monkeypatch):
    at = page(tmp_path, monkeypatch)
    assert not at.exception
    assert any("Launch an experiment" in i.value for i in at.info)


def test_single_evaluation_form_queues_a_job(tmp_path, monkeypatch):
    at = page(tmp_path, monkeypatch)
    at.selectbox(key="ev_preset").set_value("tiny-random")
    at.selectbox(key="ev_benchmark").set_value("math-test")
    at.number_input(key="ev_limit").set_value(2)
    at.button(key="ev_submit").click().run()
    assert not at.error, [e.value for e in at.error]
    assert any("Queued eval job" in s.value for s in at.success)
    jobs = Store(tmp_path).list_runs(kind="eval")
    assert len(jobs) == 1 and jobs["name"].iloc[0] == "math-test · tiny-random"
    cancel(jobs["id"].iloc[0], tmp_path)


def test_launcher_shows_the_spec_and_rejects_bad_input_before_any_job(tmp_path, monkeypatch):
    at = page(tmp_path, monkeypatch)
    codes = [c.value for c in at.code]
    assert "python -m lab experiment run --preset quick-cpu" in codes
    spec = yaml_of(codes)
    assert spec == ex.load_preset("quick-cpu").to_dict()               # the form builds the preset
    at.number_input(key="xp_seeds").set_value(3).run()
    codes = [c.value for c in at.code]
    assert "python -m lab experiment run experiment.yaml" in codes and yaml_of(codes)["seeds"] == [0, 1, 2]
    # issue 12's ready-made arms are offered, with their settings
    at.multiselect(key="xp_arms").set_value(["ntp", "quiet-star-forking", "quiet-star-random"]).run()
    arms = yaml_of([c.value for c in at.code])["arms"]
    assert arms[1]["title"] == "Quiet-STaR (forking tokens)" and arms[1]["params"]["thought_positions"] == "forking"
    assert arms[2]["params"] == {"thought_content": "random"}
    at.multiselect(key="xp_benchmarks").set_value(["csqa"])
    at.text_input(key="xp_data_csqa").set_value("")
    at.button(key="xp_launch").click().run()
    assert any("needs data" in e.value for e in at.error)
    assert Store(tmp_path).list_runs(kind=None).empty and not (tmp_path / "experiments").exists()


def yaml_of(codes: list[str]) -> dict:
    import yaml
    return yaml.safe_load(next(c for c in codes if c.startswith("title:")))


def test_launching_returns_at_once_and_results_show_the_new_experiment(tmp_path, monkeypatch):
    at = page(tmp_path, monkeypatch)
    at.button(key="xp_launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    exp = at.session_state["xp_launched"]
    try:
        assert at.query_params["experiment"] == [exp] or at.query_params["experiment"] == exp
        assert at.selectbox(key="bm_experiment").value == exp           # shown under Results at once
        assert (tmp_path / "experiments" / f"{exp}.yaml").exists()
        assert any(f"Started experiment {exp}" in s.value for s in at.success)
        assert ex.load_spec(tmp_path / "experiments" / f"{exp}.yaml").title.startswith("Quick CPU demo")
    finally:
        ex.cancel(exp, tmp_path)


@pytest.mark.timeout(420)
def test_benchmarks_page_in_a_browser_shows_seeds_and_exports_the_report(filled):
    d, exp = filled
    # As `make demo` serves it: the lab opens on the experiment's results.
    with lab_server(d, env={"THOUGHTLAB_DEMO": "1"}) as url, browser_page(1400, 3000) as pw:
        pw.goto(url)
        pw.get_by_text("Compute: what was matched").wait_for()
        pw.get_by_text("Score per benchmark").first.wait_for()
        wait_idle(pw)
        assert pw.locator(".js-plotly-plot .barlayer .trace").count() >= 5
        assert pw.get_by_text("Takeaway: ").count() >= 4            # a sentence under each chart
        pw.get_by_role("button", name=re.compile("Export experiment report")).click()
        with pw.expect_download() as dl:
            pw.get_by_role("button", name=re.compile("Download experiment report")).click()
        target = ARTIFACTS / "experiment_report.html"
        ARTIFACTS.mkdir(exist_ok=True)
        dl.value.save_as(target)
        doc = target.read_text(encoding="utf-8")
        assert doc.startswith("<!DOCTYPE html>") and exp in doc and "The answer" in doc
        pw.evaluate("document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")
        wait_idle(pw)
        shot(pw, "benchmarks")
