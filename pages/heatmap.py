"""Reward heatmap: token positions × training steps for the logged (fixed probe) samples,
and positions × thoughts at one step."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from lab import queries
from pages.common import pick_run, store

st.title("Reward heatmap")
st.caption("Samples are recorded on a fixed probe batch, so each row is the same text position "
           "across training.")

run = pick_run("Run", key="hm_run", table="thoughts")
if run is None:
    st.stop()
samples = queries.thought_samples(store(), run["id"])
c1, c2 = st.columns([1, 1])
sample = c1.selectbox("Sample", samples, key="hm_sample")
stat = c2.radio("Value", list(queries.THOUGHT_AGGREGATES), horizontal=True, key="hm_stat")
df = queries.thought_grid(store(), run["id"], sample, stat)
if df.empty:
    st.info("No thoughts logged for this sample yet.")
    st.stop()
grid = df.pivot(index="position", columns="step", values="v").sort_index()
# Rows named by their token (the probe text is the same at every step), steps as categories.
steps_logged = store().sample_steps(run["id"], "tokens")
toks = store().tokens(run["id"], steps_logged[-1], sample) if steps_logged else None
names = dict(zip(toks["position"], toks["token"])) if toks is not None else {}
rows = [f"{p}: {names.get(p, '')!r}" for p in grid.index]
unit = "nats" if stat.startswith("NLL") else "reward"
fig = go.Figure(go.Heatmap(z=grid.values, x=[str(s) for s in grid.columns], y=rows,
                           colorscale="Oranges", colorbar=dict(title=unit, exponentformat="e"),
                           hovertemplate="step %{x} · %{y}: %{z:.4f}<extra></extra>"))
fig.update_layout(height=520, xaxis_title="training step", yaxis_title="position: next token",
                  margin=dict(l=10, r=10, t=20, b=10), yaxis_autorange="reversed", xaxis_type="category")
st.plotly_chart(fig, width="stretch")
st.caption("Each cell: one token position (rows, with the token the thoughts helped predict) at one "
           "logged training step (columns). Rewards are in the objective's own units: Quiet-STaR's is "
           "the gain in log-probability of the true continuation over the other thoughts' mean "
           "(nats), RLP's the log-prob gain over no thought (nats), RPT's 1 for a right boxed guess "
           "and 0 otherwise. Small values are written in e-notation (5e-06), not with SI prefixes.")
st.caption("A blank cell: no thought at that position and step. Quiet-STaR with "
           "thought_positions=forking thinks only at the highest-entropy positions of each micro-batch "
           "(the Thoughts page outlines them and shows their entropy); RLP at its sampled positions.")

steps = sorted(df["step"].unique().tolist())
step = steps[0] if len(steps) == 1 else st.select_slider("Step", steps, value=steps[-1], key="hm_step")
one = queries.thought_rewards(store(), run["id"], sample, step)
g2 = one.pivot_table(index="position", columns="idx", values="reward").sort_index()
fig2 = go.Figure(go.Heatmap(z=g2.values, x=[f"thought {i}" for i in g2.columns], y=g2.index,
                            colorscale="Oranges", colorbar=dict(title="reward", exponentformat="e")))
fig2.update_layout(height=420, title=f"Positions × thoughts at step {step}", yaxis_title="token position",
                   margin=dict(l=10, r=10, t=40, b=10), yaxis_autorange="reversed")
st.plotly_chart(fig2, width="stretch")
