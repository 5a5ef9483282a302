"""Issue 16's page fixes in headless Chromium, with screenshots in test-artifacts/ (look at
them): queue position and one status table on Runs, the top-5 hover and absolute scale on
Forking tokens, and the default same-benchmark comparison of individual evals."""
from __future__ import annotations

import json
import re

import pytest
from browser import browser_page, lab_server, shot, wait_idle

from lab.config import RunConfig
from lab.store import Store, now
from lab.train import train

pytestmark = pytest.mark.timeout(600)


def nav(page, title: str) -> None:
    page.get_by_role("link", name=title, exact=True).first.click()
    wait_idle(page)


def _csqa_eval(store: Store, eval_id: str, model: str, scores: list[float]) -> None:
    store.save_evals([{"id": eval_id, "run_id": None, "model": model, "benchmark": "csqa", "mode": "loglik",
                       "n_items": len(scores), "score": sum(scores) / len(scores), "stderr": 0.05,
                       "created_at": now(), "config": {"spec": {"limit": len(scores)}, "metric": "acc"}}],
                     [{"eval_id": eval_id, "item_id": f"q{i}", "correct": c, "prediction": "A", "target": "A",
                       "extra": {}} for i, c in enumerate(scores)])


@pytest.fixture(scope="module")
def lab_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("pagesdata")
    store = Store(d)
    cfg = RunConfig.from_dict(dict(objective="ntp", model="tiny-random", corpus_docs=40, seq_len=32, batch_size=2,
                                   max_steps=2, lr=1e-3, sample_every=1, n_samples=1, checkpoint_every=0,
                                   name="tiny ntp")).validate()
    done = store.create_run(config=cfg.to_dict(), status="running")
    train(cfg, done, store)
    store.update_run(done, status="finished", finished_at=now())
    waiting = store.create_run(config={**cfg.to_dict(), "name": "waiting job"})   # queued, no supervisor
    _csqa_eval(store, "big-smollm2", "smollm2-135m", [1.0, 0.0] * 25)              # n = 50
    _csqa_eval(store, "tiny-a", "tiny-random", [1.0, 0.0, 0.0, 0.0] * 5)          # n = 20
    _csqa_eval(store, "tiny-b", "run:x", [1.0, 1.0, 0.0, 0.0] * 5)                # n = 20, newest
    return d, done, waiting


def test_runs_forking_and_individual_evals_in_a_browser(lab_data):
    d, done, waiting = lab_data
    with lab_server(d) as url, browser_page() as page:
        page.goto(url)
        page.get_by_text("Launch a training run").wait_for()
        nav(page, "Runs")
        page.get_by_text("1 queued").first.wait_for()
        grid = page.locator('[data-testid="stDataFrame"]').first
        grid.wait_for()
        assert page.locator("[data-testid='stAlert']").filter(has_text=re.compile(r"^nan$")).count() == 0
        shot(page, "runs-status-table")
        # The curves picker defaults to the run with metrics, not the newer queued one.
        assert "tiny ntp" in page.locator('[data-testid="stMultiSelect"]').first.inner_text()

        nav(page, "Forking tokens")
        page.get_by_text(re.compile(r"Showing step \d+")).first.wait_for()
        token = page.locator("span.tok").nth(3)
        title = token.get_attribute("title")
        assert re.search(r"true token rank \d+; top 5:", title), title
        token.hover()
        page.get_by_text("colour = entropy of the prediction, nats").first.wait_for()
        shot(page, "forking-top5-legend")

        nav(page, "Benchmarks")
        page.get_by_text("Individual evals", exact=True).click()
        wait_idle(page)
        chosen = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Evals").first.inner_text()
        assert "tiny-b" in chosen and "tiny-a" in chosen and "big-smollm2" not in chosen
        page.get_by_text("B − A").first.wait_for()
        page.get_by_text("tiny-random · csqa vs run:x").first.wait_for()     # B vs A by model, not "base"
        shot(page, "benchmarks-individual-evals")
    assert json.loads(Store(d).get_run(waiting)["config"])["name"] == "waiting job"
