"""The lab in a real headless Chromium (Playwright + Debian's chromium): launch a job from the
form and watch its curve appear. Screenshots go to test-artifacts/ for a person to look at."""
from __future__ import annotations

import re

import pytest
from browser import browser_page, choose, lab_server, set_number, shot, wait_idle

from lab.store import Store, wait_for

pytestmark = pytest.mark.timeout(420)


def test_launch_from_form_and_watch_the_curve(tmp_path):
    with lab_server(tmp_path) as url, browser_page() as page:
        page.goto(url)
        page.get_by_text("Launch a training run").wait_for()
        choose(page, "Preset", "quick CPU demo (tiny-random, 30 steps) · quick-cpu")
        set_number(page, "Steps", 8)
        set_number(page, "Sequence length", 32)
        shot(page, "launch_form")
        page.get_by_role("button", name="Launch").click()
        page.get_by_text(re.compile(r"Started run")).wait_for()
        store = Store(tmp_path)
        rid = store.list_runs()["id"].iloc[0]
        page.get_by_role("link", name=re.compile("Open Runs")).click()
        page.get_by_text("Curves").wait_for()
        assert wait_for(lambda: store.get_run(rid)["status"] == "finished", timeout=240), store.get_run(rid)
        page.wait_for_timeout(4000)            # the fragment refreshes every 2 s
        wait_idle(page)
        charts = page.locator('[data-testid="stPlotlyChart"]')
        charts.first.wait_for()
        assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= 1
        assert page.get_by_text("finished").count() >= 1
        shot(page, "runs_with_curve")
