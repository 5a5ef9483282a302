"""An experiment's numbers as plain-text tables (for docs/findings.md): the scores of every
arm (mean ± sd over seeds), then the seed-pooled deltas against the reference arm and
against the base, each with its 95 % interval and verdict (lab/experiments/compare.py).

    .venv/bin/python bench/experiment_tables.py EXP_ID DATA_DIR
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
from lab.store import Store
from lab.experiments.results import experiment_results, score_table
from lab.experiments.compare import pooled_deltas
exp = sys.argv[1]
store = Store(sys.argv[2])
res = experiment_results(store, exp)
st = score_table(res)
st = st[st["thought_mode"] == "none"]
pd.set_option("display.width", 250); pd.set_option("display.max_columns", 30); pd.set_option("display.max_rows", 200)
def fmt(r):
    scale = 100 if r["metric"] == "acc" else 1
    return f"{r['mean']*scale:.2f} ± {r['sd']*scale:.2f}" if r["n_seeds"] > 1 else f"{r['mean']*scale:.2f}"
st["value"] = st.apply(fmt, axis=1)
print("## scores (mean ± sd over seeds; acc in %, NLL in nats)")
piv = st.pivot_table(index=["benchmark", "metric"], columns="arm", values="value", aggfunc="first")
print(piv.to_string())
print(st.groupby("arm")[["steps", "flops", "n"]].mean().to_string())
for against in ("reference", "base"):
    d = pooled_deltas(store, exp, against=against)
    print(f"## pooled deltas against {against}")
    cols = [c for c in d.columns if c in ("arm", "benchmark", "metric", "delta", "ci_low", "ci_high", "n_seeds", "n_items", "seed_sd", "verdict")]
    print(d[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
