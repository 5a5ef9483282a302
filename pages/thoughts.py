"""Thoughts: for a logged sample, the text where each position can be selected to show its
thoughts (Quiet-STaR), thought group (RLP) or rollouts (RPT) with rewards and effects."""
from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages.common import pick_logged_sample, shown_step_caption, store, token_html, windowed

st.title("Thoughts")
st.caption("What the model thought before each token, how each thought was rewarded, and how it "
           "changed the prediction of the true next token.")

run, step, sample = pick_logged_sample("thoughts", "th")
shown_step_caption(run, step, sample)
th = store().thoughts(run["id"], step, sample)
toks = store().tokens(run["id"], step, sample)

# Per position: best reward and NLL change of the true next token (base - mixed > 0 = helped).
per_pos = th.groupby("position").agg(reward=("reward", "max"), base_nll=("base_nll", "mean"),
                                     mixed_nll=("mixed_nll", "mean"), weight=("weight", "mean"),
                                     target=("target", "first"), n=("idx", "count")).reset_index()
per_pos["gain"] = per_pos["base_nll"] - per_pos["mixed_nll"]

if not toks.empty:
    # A thought record's `position` is the token it helped predict, as in the tokens table.
    colour = per_pos[["position", "gain"]]
    view = toks.merge(colour, on="position", how="left")
    view["help"] = view["gain"].clip(lower=0)
    view["thought"] = view["position"].isin(set(per_pos["position"]))   # positions that thought
    details = [json.loads(e) for e in th["extra"].dropna().head(1)]
    forking = bool(details) and details[0].get("selection") == "forking"
    st.markdown("Colour = how much the thoughts before a token lowered its NLL (darker = helped more). "
                f"Outlined: the {int(view['thought'].sum())} of {len(view) - 1} tokens with a thought "
                "before them" + (" — chosen as the highest-entropy positions of the micro-batch "
                                 "(thought_positions=forking); `entropy` in the tooltip is why" if forking else "")
                + ". Hover for numbers.")
    shown = windowed(view, "th")
    st.markdown(token_html(shown, "help", mark_col="thought",
                           tooltip_cols=("gain", "entropy", "nll")),
                unsafe_allow_html=True)
    gains = shown.dropna(subset=["gain"])
    if not gains.empty:
        fig = go.Figure(go.Bar(x=gains["position"], y=gains["gain"], customdata=gains["token"],
                               marker_color=["#2e7d32" if g >= 0 else "#c62828" for g in gains["gain"]],
                               hovertemplate="pos %{x} %{customdata}: %{y:+.4f} nats<extra></extra>"))
        fig.update_layout(height=220, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="token position",
                          yaxis_title="nats", title="Information gain per token: log p(token | thoughts) "
                                                    "− log p(token | no thought)")
        st.plotly_chart(fig, width="stretch", key="th_gain")
        st.caption("Above 0 (green): the thoughts made the true token likelier; below 0 (red): less likely.")

c1, c2 = st.columns(2)
valid = per_pos.dropna(subset=["gain"])
with c1:
    st.markdown("**Positions the thoughts helped most**")
    st.dataframe(valid.nlargest(8, "gain")[["position", "target", "gain", "reward", "weight"]],
                 hide_index=True, width="stretch")
with c2:
    st.markdown("**…and least**")
    st.dataframe(valid.nsmallest(8, "gain")[["position", "target", "gain", "reward", "weight"]],
                 hide_index=True, width="stretch")

positions = per_pos["position"].tolist()
if not positions:
    st.stop()
best = int(valid.nlargest(1, "gain")["position"].iloc[0]) if not valid.empty else positions[0]
pos = st.selectbox("Position", positions, index=positions.index(best), key="th_pos",
                   format_func=lambda p: f"{p} → next token {per_pos.set_index('position').loc[p, 'target']!r}")
group = th[th["position"] == pos].sort_values("reward", ascending=False)
row = per_pos.set_index("position").loc[pos]
if not toks.empty:
    prefix = "".join(toks[toks["position"] < pos]["token"].tolist()[-60:])
    st.markdown(f"**Context** …`{prefix[-300:]}` → true next token **{row['target']!r}**")
m1, m2, m3 = st.columns(3)
m1.metric("NLL of next token, no thought", f"{row['base_nll']:.3f}" if pd.notna(row["base_nll"]) else "–")
m2.metric("…with thought(s)", f"{row['mixed_nll']:.3f}" if pd.notna(row["mixed_nll"]) else "–",
          delta=f"{-row['gain']:.3f}" if pd.notna(row["gain"]) else None, delta_color="inverse")
m3.metric("Mixing weight w", f"{row['weight']:.3f}" if pd.notna(row["weight"]) else "–")

cols = [c for c in ("idx", "text", "prediction", "reward", "advantage", "weight", "base_nll",
                    "mixed_nll", "n_tokens") if group[c].notna().any()]
st.dataframe(group[cols], hide_index=True, width="stretch",
             column_config={"text": st.column_config.TextColumn("thought / rollout", width="large")})
extra = group["extra"].dropna()
if not extra.empty:
    with st.expander("Raw details"):
        st.json([json.loads(e) for e in extra.tolist()], expanded=False)
