"""Next-token reasoning accuracy (RPT's evaluation): on held-out positions split by a fixed
reference model's entropy, standard accuracy (argmax) vs reasoning accuracy (think, then box a
guess), base vs trained, plus the box-failure rate."""
from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from jobs.manager import submit_nt_reasoning
from lab import queries
from lab.errors import LabError
from lab.models import PRESETS as MODEL_PRESETS
from pages.common import checkpoint_label, checkpoint_runs, data_dir, store

LEVELS = ["easy", "medium", "hard"]

st.title("Next-token reasoning accuracy")
st.caption("RPT's metric (Dong et al. 2025): positions of held-out built-in problems are split by a "
           "fixed reference model's entropy (easy > 0.5, medium > 1.0, hard > 1.5 nats). Standard "
           "accuracy: the argmax token is right. Reasoning accuracy: the model reasons, boxes a guess, "
           "and the guess is a byte-exact prefix of the text ending on a token boundary.")

ev = queries.evals_of_benchmark(store(), "nt-reasoning")
if ev.empty:
    st.info("No next-token reasoning results yet. Start an evaluation below, or Launch an RPT run first.")
else:
    ev[["kind", "level"]] = ev["mode"].str.split("/", n=1, expand=True)
    ev["box_failure_rate"] = [json.loads(c or "{}").get("box_failure_rate") for c in ev["config"]]
    models = list(dict.fromkeys(ev["model"]))
    shown = st.multiselect("Models (base and trained)", models, default=models[-2:], key="nta_models")
    fig = go.Figure()
    for m in shown:
        for kind, pattern in (("standard", ""), ("reasoning", "/")):
            g = ev[(ev["model"] == m) & (ev["kind"] == kind)].drop_duplicates("level", keep="last")
            g = g.set_index("level").reindex(LEVELS)
            fig.add_trace(go.Bar(name=f"{m} · {kind}", x=LEVELS, y=g["score"],
                                 error_y=dict(type="data", array=g["stderr"].fillna(0)),
                                 marker_pattern_shape=pattern, hovertemplate="%{y:.1%} (n=%{customdata})",
                                 customdata=g["n_items"]))
    fig.update_layout(barmode="group", height=380, yaxis_tickformat=".0%", yaxis_title="accuracy",
                      margin=dict(l=10, r=10, t=20, b=10), legend=dict(orientation="h", y=-0.2))
    st.plotly_chart(fig, width="stretch")
    table = ev[ev["model"].isin(shown)][["model", "kind", "level", "n_items", "score", "stderr",
                                          "box_failure_rate", "created_at"]]
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"score": st.column_config.NumberColumn("accuracy", format="percent"),
                                "box_failure_rate": st.column_config.NumberColumn("no box", format="percent")})

    st.subheader("Items")
    choices = {f"{r.model} · {r.mode}": r.id for r in ev[ev["model"].isin(shown)].itertuples()}
    if choices:
        pick = st.selectbox("Evaluation", list(choices), key="nta_pick")
        items = queries.item_rows(store(), [choices[pick]]).drop(columns=["eval_id"])
        extra = pd.DataFrame([json.loads(e or "{}") for e in items["extra"]])
        view = pd.concat([items.drop(columns=["extra"]), extra.drop(columns=["predictions"], errors="ignore")],
                         axis=1)
        st.dataframe(view, hide_index=True, width="stretch")

st.subheader("Evaluate a model")
with st.form("nta_launch"):
    runs = checkpoint_runs(include_active=True)     # a running run is evaluated once it finishes
    names = {f"run:{i}": checkpoint_label(r) for i, r in runs.items()}
    c1, c2 = st.columns(2)
    model = c1.selectbox("Model to evaluate", list(names) + list(MODEL_PRESETS), key="nta_model",
                         format_func=lambda m: names.get(m, m))
    reference = c2.selectbox("Fixed reference model (difficulty split)", list(MODEL_PRESETS), key="nta_ref",
                             help="Use the base model the run started from, so base and trained share the split.")
    c3, c4, c5 = st.columns(3)
    n_positions = c3.number_input("Positions per level", 1, 1000, 32, key="nta_n")
    group = c4.number_input("Rollouts per position", 1, 16, 1, key="nta_g")
    new_tokens = c5.number_input("Max reasoning tokens", 8, 2048, 64, key="nta_tokens")
    also_base = st.checkbox("Also evaluate the reference (base) model", value=True, key="nta_base")
    if st.form_submit_button("Start evaluation", type="primary"):
        try:
            ids = [submit_nt_reasoning(model, data_dir(), reference=reference, n_positions=int(n_positions),
                                       group_size=int(group), max_new_tokens=int(new_tokens))]
            if also_base and model != reference:
                ids.append(submit_nt_reasoning(reference, data_dir(), reference=reference,
                                               n_positions=int(n_positions), group_size=int(group),
                                               max_new_tokens=int(new_tokens)))
            st.success(f"Queued {', '.join(ids)}: follow them on the Runs page; results appear here.")
        except LabError as e:
            st.error(str(e))
