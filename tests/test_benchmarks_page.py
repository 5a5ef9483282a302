"""The Benchmarks page: AppTest on a data folder holding a finished tiny experiment, and one
real-browser walk (bars, report export, screenshot test-artifacts/benchmarks.png)."""
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


def test_experiment_results_render_with_bars_deltas_and_controls(filled, monkeypatch):
    d, exp = filled
    at = page(d, monkeypatch, experiment=exp)
    assert not at.exception, at.exception
    assert at.selectbox(key="bm_experiment").value == exp
    bars = [t for t in traces(at) if t["type"] == "bar"]
    names = {t["name"] for t in bars}
    assert {n for n in names if not n.startswith("ntp@")} == {"base", "ntp", "quiet-star",
                                                             "quiet-star +thoughts", "quiet-star +corrupted"}
    assert len(names) == 6                          # and NTP at Quiet-STaR's step count
    assert all(t["error_y"]["visible"] for t in bars)
    heads = [h.value for h in at.subheader]
    for h in ("Compute: what was matched", "Scores", "Deltas", "Items that flipped", "Export"):
        assert h in heads
    assert any(h.startswith("Quiet-STaR") for h in heads)
    frames = [f.value for f in at.dataframe]
    assert any("verdict" in f.columns and set(f["reference"]) == {"ntp", "ntp@1"} and
               set(f["matched"]) == {"FLOPs", "steps"} for f in frames)

    at.button(key="bm_exp_report_build").click().run()
    assert not at.exception and not at.error
    name, saved = at.session_state["bm_exp_report"]
    assert name.endswith(".html") and Path(saved) == d / "exports" / name
    assert "Reasoning objectives vs NTP" in Path(saved).read_text("utf-8")

    at.radio(key="bm_against").set_value("base").run()
    assert not at.exception
    assert any("verdict" in f.columns and set(f["reference"]) == {"base"} for f in (x.value for x in at.dataframe))
    at.radio(key="bm_view").set_value("Individual evals").run()
    assert not at.exception and any(t["type"] == "bar" for t in traces(at))


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


def test_experiment_launcher_rejects_bad_input_before_any_job(tmp_path, monkeypatch):
    at = page(tmp_path, monkeypatch)
    at.multiselect(key="xp_benchmarks").set_value(["csqa"])
    at.text_input(key="xp_data_csqa").set_value("")
    at.button(key="xp_launch").click().run()
    assert any("needs a csqa data file" in e.value for e in at.error)
    assert Store(tmp_path).list_runs(kind=None).empty


@pytest.mark.timeout(420)
def test_benchmarks_page_in_a_browser_shows_bars_and_exports_the_report(filled):
    d, exp = filled
    with lab_server(d) as url, browser_page(1400, 3600) as pw:
        pw.goto(url)
        pw.get_by_text("Launch a training run").wait_for()   # the app's navigation is drawn
        wait_idle(pw)
        pw.get_by_role("link", name="Benchmarks").click()
        pw.get_by_text("Compute: what was matched").wait_for()
        pw.get_by_text("Score per benchmark").wait_for()
        wait_idle(pw)
        assert pw.locator(".js-plotly-plot .barlayer .trace").count() >= 5
        pw.get_by_role("button", name=re.compile("Export experiment report")).click()
        with pw.expect_download() as dl:
            pw.get_by_role("button", name=re.compile("Download experiment report")).click()
        target = ARTIFACTS / "experiment_report.html"
        ARTIFACTS.mkdir(exist_ok=True)
        dl.value.save_as(target)
        doc = target.read_text(encoding="utf-8")
        assert doc.startswith("<!DOCTYPE html>") and exp in doc and "Reasoning objectives vs NTP" in doc
        wait_idle(pw)
        shot(pw, "benchmarks")
