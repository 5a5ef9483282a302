"""Pages that guide (issue 16), headless (AppTest) on small synthetic data folders: runs are
real rows in a real DuckDB file, written through the store as jobs write them."""
from __future__ import annotations

from conftest import app_page

from lab.store import Store


def _run(store: Store, name: str, status: str, steps: int = 0, **config) -> str:
    rid = store.create_run(config={"objective": "ntp", "model": "tiny-random", "max_steps": 10,
                                   "name": name, **config}, status=status)
    rows = [{"run_id": rid, "step": s, "name": "loss", "value": 3.0 - 0.1 * s, "wall_time": float(s),
             "flops": 1e9 * s} for s in range(1, steps + 1)]
    store.append({"metrics": rows}, run_update={"step": steps}, run_id=rid)
    return rid


def test_runs_page_guides_instead_of_confusing(data_dir, monkeypatch):
    store = Store(data_dir)
    failed = _run(store, "broken", "failed")
    store.update_run(failed, error="The loss became nan at step 3.")   # other rows' error: missing
    one_step = _run(store, "one step", "finished", steps=1)
    stopped = _run(store, "stopped early", "cancelled")          # cancelled while queued: no checkpoint
    store.update_run(stopped, error=None)
    queued = _run(store, "waiting", "queued")                     # newest, nothing logged
    at = app_page("pages/runs.py", data_dir, monkeypatch, timeout=60)
    assert not at.exception, at.exception
    assert not [e.value for e in at.error]                        # no "nan" error box under the queued run
    # Curves default to the newest run that has metrics, not the queued one.
    assert at.multiselect(key="runs_chosen").value == [one_step]
    chart = at.get("plotly_chart")[0].proto.spec
    assert '"mode":"lines+markers"' in chart.replace(" ", "")     # a single step is still drawn
    table = at.dataframe[0].value
    row = table.set_index("id").loc[queued]
    assert row["state"] == "queued · #1 in queue"
    assert "1 queued" in at.markdown[0].value.replace("*", "")
    at.selectbox(key="runs_detail").set_value(stopped).run()
    resume = next(b for b in at.button if b.label == "Resume from last checkpoint")
    assert resume.disabled and "no checkpoint" in resume.help
    at.selectbox(key="runs_detail").set_value(failed).run()
    assert [e.value for e in at.error] == ["The loss became nan at step 3."]


def test_experiment_jobs_fold_into_one_row_per_experiment(data_dir, monkeypatch):
    store = Store(data_dir)
    for i in range(12):
        _run(store, f"job {i}", "queued" if i else "running", experiment="exp-1")
    _run(store, "alone", "finished", steps=3)
    at = app_page("pages/runs.py", data_dir, monkeypatch, timeout=60)
    assert not at.exception
    assert len(at.get("progress")) == 0                           # no bar per job
    assert [e.label for e in at.expander][0] == "Experiment exp-1: 0/12 jobs finished, 12 queued or running"
    assert list(at.dataframe[0].value["name"]) == ["alone"]


def test_score_chart_draws_the_chance_line_and_values_on_every_bar():
    import pandas as pd

    from lab.figures import seed_scores_figure
    scores = pd.DataFrame([{"label": arm, "arm": arm, "thought_mode": "none", "matched": "", "benchmark": "csqa",
                            "metric": "acc", "primary": True, "higher_is_better": True, "mean": mean,
                            "sd": float("nan"), "min": mean, "max": mean, "n_seeds": 1, "seeds": [0],
                            "scores": [mean], "n": 50, "steps": 4.0, "flops": 1.0, "eval_ids": ["e"]}
                           for arm, mean in (("ntp", 0.0), ("quiet-star", 0.24))])
    fig = seed_scores_figure(scores)
    chance = [t for t in fig.data if t.name == "chance (0.20)"]
    assert len(chance) == 1 and list(chance[0].y) == [0.2] and chance[0].text == ("chance 0.20",)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.texttemplate for b in bars] == ["%{y:.2f}"] * 2      # the 0.00 bar is labelled, so seen


def test_token_colours_are_absolute_and_the_hover_lists_the_top_5():
    import json

    import pandas as pd

    from pages.common import token_html
    flat = pd.DataFrame({"position": [1, 2], "token": [" a", " b"], "entropy": [10.700, 10.703],
                         "nll": [1.0, 2.0], "prob": [0.3, 0.1],
                         "extra": [json.dumps({"top": [[" a", 0.3], [" c", 0.2]], "rank": 1}), None]})
    html = token_html(flat, "entropy")
    spans = html.split('<span title="pos')[1:]
    # Near-constant entropies get the same shade (relative scales painted 0.003 nats as the full range).
    assert spans[0].split("background:")[1].split(";")[0] == spans[1].split("background:")[1].split(";")[0]
    assert "true token rank 1; top 2:" in spans[0] and "&#x27; c&#x27; 0.200" in spans[0]
    assert "colour = entropy of the prediction, nats" in html and "5+" in html


def test_demo_reuses_a_finished_experiment_and_ignores_unfinished_ones(data_dir):
    from lab.demo import ensure_demo, finished_demo
    from lab.experiments import load_preset
    assert load_preset("demo-cpu").problems(data_dir) == []
    store = Store(data_dir)
    assert finished_demo(data_dir) is None
    _run(store, "half", "finished", experiment="exp-half")
    _run(store, "half 2", "queued", experiment="exp-half")
    assert finished_demo(data_dir) is None
    for i in range(2):
        _run(store, f"done {i}", "finished", experiment="exp-done")
    assert finished_demo(data_dir) == "exp-done"
    assert ensure_demo(data_dir) == "exp-done"                    # nothing is started again
    assert len(store.list_runs(kind=None)) == 4


def test_progress_line_shows_where_a_long_step_stands():
    from datetime import datetime, timedelta

    from pages.common import progress_text
    run = dict(id="r", kind="eval", status="running", step=3, max_steps=10,
               started_at=datetime.utcnow() - timedelta(seconds=30), phase="step 4/10: thought pass 2/6")
    frac, text = progress_text(run)
    assert frac == 0.3 and text.startswith("running · step 3/10 · ")
    assert text.endswith("· now step 4/10: thought pass 2/6")
    assert "now" not in progress_text({**run, "phase": "training"})[1]
    assert progress_text({**run, "step": 0})[1] == "running · step 4/10: thought pass 2/6"
