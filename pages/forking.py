"""Forking tokens: a logged sample's tokens coloured by entropy, the top DISPLAY_SHARE marked
(beside the run's own training share ρ), the entropy histogram, its evolution over training,
and top-share overlap between steps."""
from __future__ import annotations

import json

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from lab import queries
from lab.entropy import LOW_ENTROPY
from lab.records import DISPLAY_SHARE
from pages.common import pick_logged_sample, shown_step_caption, store, token_html, windowed

st.title("Forking tokens")
st.caption("High-entropy tokens are the 'forks' where the model decides what comes next; about 20 % "
           "of tokens carry most of the learning signal (Wang et al. 2025, arXiv:2506.01939).")

run, step, sample = pick_logged_sample("tokens", "fork")
shown_step_caption(run, step, sample)
toks = store().tokens(run["id"], step, sample)
ent = toks["entropy"].dropna()

m1, m2, m3, m4 = st.columns(4)
m1.metric("Tokens", len(toks))
m2.metric("Mean entropy (nats)", f"{ent.mean():.3f}" if len(ent) else "–")
m3.metric("80th percentile", f"{ent.quantile(0.8):.3f}" if len(ent) else "–")
m4.metric(f"Share below {LOW_ENTROPY}", f"{(ent < LOW_ENTROPY).mean():.1%}" if len(ent) else "–")

st.markdown("Colour = entropy of the distribution that predicted the token; "
            "<span style='outline:2px solid #7b1fa2;font-weight:600'>outlined</span> = the top "
            f"{DISPLAY_SHARE:.0%} of this sequence (forking). Hover a token for its numbers.",
            unsafe_allow_html=True)
try:
    rho = float(json.loads(run.get("config") or "{}").get("rho", 1.0))
except (ValueError, TypeError, AttributeError):   # an unreadable config: say "every token"
    rho = 1.0
st.caption(f"This run trained on ρ = {rho:g} of the tokens: " + (
    "every token." if rho >= 1 else f"the top {rho:.0%} of each micro-batch by entropy (selected over the "
    "whole micro-batch, so a sequence may hold more or fewer of them than the outline here).")
    + f" The outline is a fixed {DISPLAY_SHARE:.0%} view of one sequence (records.DISPLAY_SHARE).")
st.markdown(token_html(windowed(toks, "fork"), "entropy", mark_col="forking"), unsafe_allow_html=True)

c1, c2 = st.columns(2)
with c1:
    fig = px.histogram(ent, nbins=50, labels={"value": "entropy (nats)"}, title="Entropy histogram")
    if len(ent):
        fig.add_vline(x=float(ent.quantile(0.8)), line_dash="dash", annotation_text="p80")
    fig.update_layout(showlegend=False, height=320, margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(fig, width="stretch")
with c2:
    hist = queries.entropy_values(store(), run["id"])
    fig = go.Figure()
    for s, g in hist.groupby("step"):
        fig.add_trace(go.Box(y=g["entropy"], name=str(s), boxpoints=False))
    fig.update_layout(title="Entropy over training (logged samples)", height=320, showlegend=False,
                      xaxis_title="step", yaxis_title="entropy (nats)", margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_type="category")      # one tick per logged step, nothing in between
    st.plotly_chart(fig, width="stretch")

steps = store().sample_steps(run["id"], "tokens")
if len(steps) > 1:
    st.subheader("Do the forking positions move during training?")
    ov = queries.forking_overlap(store(), run["id"], steps[-1])
    fig = px.line(ov, x="step_a", y="overlap", markers=True, labels={"step_a": "step", "overlap": "overlap"},
                  title=f"Share of each step's top-20 % positions that are also top-20 % at step {steps[-1]}")
    fig.update_layout(height=300, margin=dict(l=60, r=10, t=40, b=10), yaxis_range=[0, 1.05])
    st.plotly_chart(fig, width="stretch")
    st.caption("Samples are recorded on a fixed probe batch, so the same text is compared across steps.")
