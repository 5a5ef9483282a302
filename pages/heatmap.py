"""Reward heatmap: token positions × training steps for the logged (fixed probe) samples,
and positions × thoughts at one step."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from pages.common import pick_run, store

st.title("Reward heatmap")
st.caption("Samples are recorded on a fixed probe batch, so each row is the same text position "
           "across training.")

run = pick_run("Run", key="hm_run", table="thoughts")
if run is None:
    st.stop()
samples = store().query("SELECT DISTINCT sample FROM thoughts WHERE run_id = ? ORDER BY sample",
                        [run["id"]])["sample"].tolist()
c1, c2 = st.columns([1, 1])
sample = c1.selectbox("Sample", samples, key="hm_sample")
stat = c2.radio("Value", ["mean reward", "max reward", "NLL gain (base − with thought)"], horizontal=True,
                key="hm_stat")
agg = {"mean reward": "avg(reward)", "max reward": "max(reward)",
       "NLL gain (base − with thought)": "avg(base_nll - mixed_nll)"}[stat]   # fixed SQL, no user text
df = store().query(f"""SELECT step, position, {agg} AS v FROM thoughts
                       WHERE run_id = ? AND sample = ? GROUP BY step, position""", [run["id"], sample])
if df.empty:
    st.info("No thoughts logged for this sample yet.")
    st.stop()
grid = df.pivot(index="position", columns="step", values="v").sort_index()
fig = go.Figure(go.Heatmap(z=grid.values, x=[str(s) for s in grid.columns], y=grid.index,
                           colorscale="Oranges", colorbar=dict(title=stat.split(" (")[0])))
fig.update_layout(height=520, xaxis_title="training step", yaxis_title="token position",
                  margin=dict(l=10, r=10, t=20, b=10), yaxis_autorange="reversed")
st.plotly_chart(fig, width="stretch")
st.caption("A blank cell: no thought at that position and step. Quiet-STaR with "
           "thought_positions=forking thinks only at the highest-entropy positions of each micro-batch "
           "(the Thoughts page outlines them and shows their entropy); RLP at its sampled positions.")

steps = sorted(df["step"].unique().tolist())
step = steps[0] if len(steps) == 1 else st.select_slider("Step", steps, value=steps[-1], key="hm_step")
one = store().query("""SELECT position, idx, reward FROM thoughts WHERE run_id = ? AND sample = ?
                       AND step = ?""", [run["id"], sample, step])
g2 = one.pivot_table(index="position", columns="idx", values="reward").sort_index()
fig2 = go.Figure(go.Heatmap(z=g2.values, x=[f"thought {i}" for i in g2.columns], y=g2.index,
                            colorscale="Oranges", colorbar=dict(title="reward")))
fig2.update_layout(height=420, title=f"Positions × thoughts at step {step}", yaxis_title="token position",
                   margin=dict(l=10, r=10, t=40, b=10), yaxis_autorange="reversed")
st.plotly_chart(fig2, width="stretch")
