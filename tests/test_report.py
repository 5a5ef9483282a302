"""Self-contained HTML reports of a run and of an experiment (lab/report.py)."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from lab import experiments as ex
from lab.errors import LabError
from lab.report import experiment_report_html, run_report_html, top_thoughts
from lab.store import Store

CSQA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "commonsenseqa_dev.jsonl"
EXTERNAL_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", re.IGNORECASE)


def tiny_experiment(tmp_path_factory) -> tuple[Path, str]:
    """A finished tiny experiment: NTP pretraining, then NTP and Quiet-STaR (with both thought
    controls and NTP at Quiet-STaR's step count) with two seeds each, on two benchmarks; run
    in this process without background jobs, built once per test session and shared by the
    report and page tests."""
    d = tmp_path_factory.getbasetemp() / "tiny-experiment"
    done = d / "experiment.json"
    if done.exists():
        return d, json.loads(done.read_text())["id"]
    d.mkdir(exist_ok=True)
    spec = ex.ExperimentSpec.from_dict({
        "title": "tiny demo", "model": "tiny-random",
        "training": dict(seq_len=32, batch_size=2, corpus_docs=40, lr=1e-3, sample_every=1,
                         n_samples=1, checkpoint_every=0),
        "pretrain": {"steps": 1}, "branch": {"budget_steps": 2},
        "arms": [{"id": "ntp", "objective": "ntp"},
                 {"id": "quiet-star", "objective": "quiet-star", "params": {"n_ahead": 3, "n_ahead_talk": 1}}],
        "seeds": 2, "evaluation": {"benchmarks": ["math-test", "heldout-nll"], "limit": 4,
                                   "max_new_tokens": 3, "batch_size": 4}})
    exp = ex.run_inline(ex.make_plan(spec, "exp-tiny", d), Store(d))
    done.write_text(json.dumps({"id": exp}))
    return d, exp


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    d, exp = tiny_experiment(tmp_path_factory)
    return Store(d), exp


def _self_contained(doc: str) -> None:
    assert doc.startswith("<!DOCTYPE html>") and doc.rstrip().endswith("</html>")
    assert not EXTERNAL_SCRIPT.search(doc)
    assert doc.count("* plotly.js v") == 1                         # plotly.js inlined once
    assert doc.count("<script") == 1 + doc.count("Plotly.newPlot")  # ... plus one per figure


def test_run_report_has_config_curves_scores_and_thoughts(finished):
    store, exp = finished
    comp = ex.compute_table(store, exp)
    qs = comp[(comp["arm"] == "quiet-star") & (comp["seed"] == 0)]["run_id"].iloc[0]
    doc = run_report_html(store, qs)
    _self_contained(doc)
    for text in ("Training loss", "Mean thought reward", "Mean next-token entropy", "Example thoughts",
                 "Configuration", "n_ahead_talk", "Compared with the reference arm (same seed)",
                 "Compared with the base model"):
        assert text in doc, text
    assert doc.count("Plotly.newPlot") >= 4                 # curves + delta charts
    best = top_thoughts(store, qs, k=1).iloc[0]
    assert html.escape(best["text"]) in doc and html.escape(best["context"]) in doc
    assert "true next token" in doc


def test_experiment_report_has_the_answer_seeds_deltas_and_controls(finished):
    store, exp = finished
    doc = experiment_report_html(store, exp)
    _self_contained(doc)
    for text in ("The answer", "After the same pretraining (1 NTP steps of tiny-random)", "2 seeds per arm",
                 "Design", "Compute: what was matched", "Score per benchmark", "min–max across seeds",
                 "Each arm vs the reference (NTP)", "Every arm vs the base model",
                 "Are Quiet-STaR&#x27;s thoughts used?", "Quiet-STaR +corrupted", "per seed", "seed sd",
                 "Example thoughts: Quiet-STaR", "NTP @ steps of Quiet-STaR", "The spec", "pretrained base"):
        assert text in doc, text
    budget = ex.compute_table(store, exp)["budget_flops"].max()
    assert f"{budget:.3g}" in doc
    assert "Quiet-STaR vs NTP on math-test (accuracy)" in doc       # the summary, in words
    assert doc.count("<p class='takeaway'>Takeaway: ") >= doc.count("class=\"plotly-graph-div\"") - 1


def test_reports_of_unknown_ids_say_so(finished):
    store, _ = finished
    with pytest.raises(LabError, match="No experiment"):
        experiment_report_html(store, "exp-nope")
    with pytest.raises(LabError, match="No run"):
        run_report_html(store, "nope")


def test_report_progress_goes_section_by_section_to_the_end(finished):
    store, exp = finished
    seen: list[tuple[float, str]] = []
    experiment_report_html(store, exp, progress=lambda frac, msg: seen.append((frac, msg)))
    fracs = [f for f, _ in seen]
    assert fracs == sorted(fracs) and fracs[0] == 0.0 and fracs[-1] == 1.0
    assert len(seen) >= 9                                  # one update per section at least
    assert any("Scores" in m for _, m in seen) and all("elapsed" in m for _, m in seen)


def test_cli_report_writes_the_file_with_a_progress_trail(finished, tmp_path):
    from conftest import lab_cli
    store, exp = finished
    out = tmp_path / "exp.html"
    r = lab_cli("report", exp, "--out", str(out), data_dir=store.path.parent, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and "Each arm vs the reference (NTP)" in out.read_text("utf-8")
    assert "Building the report" in r.stderr and "Jobs" in r.stderr
    bad = lab_cli("report", "exp-nope", data_dir=store.path.parent, timeout=60)
    assert bad.returncode == 2 and "No experiment" in bad.stderr
