"""Dashboard speed on a big database: 100 runs, >= 1 M per-token rows, ~750 k metric rows.

    .venv/bin/python -m bench.dashboard [--runs 100] [--token-rows 1000000] [--data-dir DIR]

Fills a data folder (once; reused if it exists), then renders every page headless with
Streamlit's AppTest and prints the server time per page (median of 3 renders) and the time of
the store queries behind them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lab.store import Store, new_run_id, now

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["pages/launch.py", "pages/runs.py", "pages/forking.py", "pages/thoughts.py",
         "pages/heatmap.py", "pages/benchmarks.py", "pages/nt_accuracy.py", "pages/playground.py"]


def fill(data_dir: Path, n_runs: int, token_rows: int, steps: int = 500) -> list[str]:
    store = Store(data_dir).init()
    existing = store.list_runs()
    if len(existing) >= n_runs:
        return existing["id"].tolist()
    rng = np.random.default_rng(0)
    ids = []
    per_run_tokens = token_rows // n_runs
    seq = 256
    samples_steps = max(1, -(-per_run_tokens // (2 * seq)))      # 2 samples per logged step (ceil)
    names = ["loss", "lr", "grad_norm", "tokens_per_s", "step_time_s", "nll", "entropy/mean",
             "entropy/p80", "entropy/share_below_0.01", "reward/mean", "reward/std", "thought/length",
             "mix/w_mean", "loss/base_nll", "loss/mixed_nll"]
    for r in range(n_runs):
        rid = new_run_id() + f"{r:03d}"
        ids.append(rid)
        objective = ["ntp", "quiet-star", "rlp", "rpt"][r % 4]
        store.create_run(run_id=rid, config={"objective": objective, "model": "smollm2-135m",
                                             "corpus": "builtin", "max_steps": steps, "name": f"bench {r}"})
        store.update_run(rid, status="finished", step=steps, finished_at=now())
        m = pd.DataFrame({
            "run_id": rid, "step": np.repeat(np.arange(1, steps + 1), len(names)),
            "name": np.tile(names, steps), "value": rng.normal(size=steps * len(names)),
            "wall_time": np.repeat(np.arange(steps) * 2.0, len(names)),
            "flops": np.repeat(np.arange(steps) * 1e12, len(names))})
        n = samples_steps * 2 * seq
        t = pd.DataFrame({
            "run_id": rid, "step": np.repeat(np.arange(1, samples_steps + 1) * 10, 2 * seq),
            "sample": np.tile(np.repeat([0, 1], seq), samples_steps), "position": np.tile(np.arange(seq), 2 * samples_steps),
            "token_id": rng.integers(0, 49152, n), "token": "tok", "entropy": rng.exponential(1.0, n),
            "nll": rng.exponential(2.0, n), "prob": rng.random(n), "forking": rng.random(n) < 0.2, "extra": None})
        th_rows = t[t["position"] % 8 == 0].head(4000)
        th = pd.DataFrame({
            "run_id": rid, "step": th_rows["step"].values, "sample": th_rows["sample"].values,
            "position": th_rows["position"].values, "idx": 0, "kind": objective, "text": "a thought",
            "n_tokens": 9, "reward": rng.random(len(th_rows)), "advantage": None, "weight": 0.1,
            "base_nll": 2.0, "mixed_nll": 1.9, "prediction": None, "target": "x", "extra": None})
        with store.write() as con:
            for table, df in (("metrics", m), ("tokens", t), ("thoughts", th)):
                con.register("_df", df)
                con.execute(f"INSERT INTO {table} SELECT * FROM _df")
                con.unregister("_df")
        print(f"\rfilled {r + 1}/{n_runs} runs", end="", flush=True)
    print()
    return ids


def render_times(data_dir: Path, repeats: int = 3) -> list[tuple[str, float]]:
    import logging

    from streamlit.testing.v1 import AppTest
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    os.environ["THOUGHTLAB_DATA_DIR"] = str(data_dir)
    out = []
    for page in PAGES:
        if not (ROOT / page).exists():
            continue
        times = []
        for _ in range(repeats):
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
            at.switch_page(page)
            t0 = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t0)
            if at.exception:
                raise RuntimeError(f"{page}: {at.exception[0].message}")
        out.append((page, statistics.median(times)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--token-rows", type=int, default=1_000_000)
    ap.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "thoughtlab-dashboard-bench"))
    args = ap.parse_args()
    d = Path(args.data_dir)
    ids = fill(d, args.runs, args.token_rows)
    store = Store(d)
    counts = store.query("SELECT (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM tokens) AS tokens,"
                         " (SELECT count(*) FROM metrics) AS metrics, (SELECT count(*) FROM thoughts) AS thoughts")
    print(counts.to_string(index=False))
    q = {}
    for name, fn in {"list_runs": lambda: store.list_runs(),
                     "metrics(3 runs, 2 names)": lambda: store.metrics(ids[:3], ["loss", "reward/mean"]),
                     "tokens(run, step, sample)": lambda: store.tokens(ids[0], 10, 0),
                     "sample_steps(run)": lambda: store.sample_steps(ids[0]),
                     "thoughts(run, step, sample)": lambda: store.thoughts(ids[1], 10, 0)}.items():
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        q[name] = statistics.median(ts)
    print("\n| store query | median ms |\n|---|---|")
    for k, v in q.items():
        print(f"| {k} | {v * 1000:.1f} |")
    print("\n| page | server render s (median of 3) |\n|---|---|")
    for page, t in render_times(d):
        print(f"| {page} | {t:.2f} |")


if __name__ == "__main__":
    main()
