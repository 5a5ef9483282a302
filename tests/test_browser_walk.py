"""Walk every page in headless Chromium as a researcher would, saving a screenshot of each
to test-artifacts/ (look at them). Also: the web server killed and restarted mid-job."""
from __future__ import annotations

import os
import re
import signal

import pytest
from browser import (
    SERVERS,
    browser_page,
    choose,
    lab_server,
    set_number,
    shot,
    wait_idle,
)

from jobs.manager import reap, submit
from lab.config import RunConfig
from lab.store import Store, wait_for

pytestmark = pytest.mark.timeout(600)


def quiet_star_run(data_dir) -> str:
    cfg = RunConfig.from_dict(dict(objective="quiet-star", model="tiny-random", corpus_docs=40, seq_len=48,
                                   batch_size=1, max_steps=4, lr=1e-3, sample_every=1, n_samples=1,
                                   checkpoint_every=0, name="thinking demo",
                                   params=dict(n_ahead=5, n_ahead_talk=2, n_passes=2)))
    return submit(cfg, data_dir)


def done(store: Store, rid: str) -> bool:
    reap(store.data_dir)
    return store.get_run(rid)["status"] not in ("queued", "running")


def nav(page, title: str) -> None:
    page.get_by_role("link", name=title, exact=True).first.click()
    wait_idle(page)


def test_walk_every_page(tmp_path, monkeypatch):
    monkeypatch.setenv("THOUGHTLAB_CPU_JOBS", "2")
    store = Store(tmp_path).init()
    qs = quiet_star_run(tmp_path)
    with lab_server(tmp_path, env={"THOUGHTLAB_CPU_JOBS": "2"}) as url, browser_page() as page:
        page.goto(url)
        page.get_by_text("Launch a training run").wait_for()
        # Launch from a preset, long enough to watch and cancel.
        choose(page, "Preset", "quick CPU demo (tiny-random, 30 steps) · quick-cpu")
        set_number(page, "Steps", 400)
        set_number(page, "Sequence length", 32)
        page.get_by_role("button", name="Launch").click()
        page.get_by_text(re.compile("Started run")).wait_for()
        long_id = store.list_runs().query("objective == 'ntp'")["id"].iloc[0]
        nav(page, "Runs")
        assert wait_for(lambda: int(store.get_run(long_id)["step"] or 0) >= 2, timeout=120)
        # the status table is a data grid drawn on a canvas: its cells are in the DOM, not "visible"
        page.get_by_text(re.compile(r"step \d+/400 · .*ETA")).first.wait_for(state="attached", timeout=30_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)   # its curves appear live
        shot(page, "walk_runs_progress")
        page.goto(url + f"/runs?run={long_id}")
        page.get_by_text("Run details").wait_for()
        wait_idle(page)
        page.get_by_role("button", name="Cancel").click()
        assert wait_for(lambda: done(store, long_id), timeout=60)
        assert store.get_run(long_id)["status"] == "cancelled"
        page.wait_for_timeout(3000)
        wait_idle(page)
        assert page.get_by_text("cancelled").count() >= 1
        shot(page, "walk_runs_cancelled")

        assert wait_for(lambda: done(store, qs), timeout=300), store.get_run(qs)
        assert store.get_run(qs)["status"] == "finished", store.get_run(qs)["error"]
        page.goto(url + f"/forking?run={qs}")
        page.get_by_text("Entropy histogram").wait_for()
        page.locator("span[title^='pos']").first.wait_for()          # the tokens render after the title
        assert page.locator("span[title^='pos']").count() == 48
        shot(page, "walk_forking")
        page.goto(url + f"/thoughts?run={qs}")
        page.get_by_text("Positions the thoughts helped most").wait_for()
        page.get_by_text("NLL of next token, no thought").wait_for()
        wait_idle(page)
        shot(page, "walk_thoughts")
        page.goto(url + f"/heatmap?run={qs}")
        page.locator(".js-plotly-plot").first.wait_for()
        wait_idle(page)
        assert page.locator(".js-plotly-plot").count() == 2
        shot(page, "walk_heatmap")


def test_server_killed_and_restarted_while_a_job_runs(tmp_path):
    store = Store(tmp_path).init()
    cfg = RunConfig.from_dict(dict(objective="ntp", model="tiny-random", corpus_docs=40, seq_len=32,
                                   batch_size=2, max_steps=60, checkpoint_every=0, name="survivor"))
    with lab_server(tmp_path) as url, browser_page() as page:
        rid = submit(cfg, tmp_path)
        page.goto(url + "/runs")
        assert wait_for(lambda: store.get_run(rid)["status"] == "running", timeout=60)
        os.killpg(SERVERS[url].pid, signal.SIGKILL)           # the web server dies hard
    # The job runs on in its own session.
    assert store.get_run(rid)["status"] in ("running", "finished")
    with lab_server(tmp_path) as url, browser_page() as page:
        page.goto(url + "/runs")
        page.locator("text=survivor >> visible=true").first.wait_for()   # its label in the pickers
        assert wait_for(lambda: done(store, rid), timeout=180)
        page.wait_for_timeout(3000)
        wait_idle(page)
        assert page.get_by_text("finished").count() >= 1
        shot(page, "walk_after_server_restart")
    assert store.get_run(rid)["status"] == "finished"
    assert store.metrics([rid], ["loss"])["step"].tolist() == list(range(1, 61))
