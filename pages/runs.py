"""Runs: status and progress of every run, live curves (several runs overlaid), log tail,
cancel/resume, rename/tag/notes/delete."""
from __future__ import annotations

import streamlit as st

from jobs.manager import cancel, read_log_tail, resume
from lab.errors import LabError
from lab.store import ACTIVE
from lab.report import curves_figure
from pages.common import (PROGRESS, progress_text, read_only, read_only_banner, reap, rerun_when_changed,
                          run_label, show_config, store, with_progress)

st.title("Runs")
read_only_banner()


@st.fragment(run_every="2s")
def run_table() -> None:
    reap()
    runs = store().list_runs(kind=None)
    if runs.empty:
        st.info("No runs yet. Start one on the **Launch** page.")
        return
    view = with_progress(runs)[["id", "name", "kind", "objective", "model", "status", "step",
                                "max_steps", "tags", "created_at", "error", "progress"]]
    st.dataframe(view, hide_index=True, width="stretch",
                 column_config={"progress": PROGRESS,
                                "created_at": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss")})
    for r in runs[runs["status"].isin(ACTIVE)].to_dict("records"):
        frac, text = progress_text(r)
        st.progress(frac, text=f"{r['id']} ({r['objective']}): {text}")
    # A run started, ended or appeared: rerun the whole page so buttons and pickers follow.
    rerun_when_changed("runs_signature", tuple(zip(runs["id"], runs["status"])))


run_table()

runs = store().list_runs(kind=None)   # training runs and evaluation jobs
if runs.empty:
    st.stop()
records = {r["id"]: r for r in runs.to_dict("records")}
train_ids = [r["id"] for r in records.values() if r["kind"] == "train"]
labels = {i: run_label(r) for i, r in records.items()}

st.subheader("Curves")
default = [st.query_params["run"]] if st.query_params.get("run") in train_ids else train_ids[:1]
chosen = st.multiselect("Runs to compare", train_ids, default=default, format_func=labels.get,
                        key="runs_chosen")
c2, c3 = st.columns([2, 2])
with c2:
    x = st.radio("x axis", ["step", "wall_time", "flops"], horizontal=True, key="runs_x",
                 format_func={"step": "step", "wall_time": "wall time", "flops": "FLOPs"}.get)
with c3:
    smoothing = st.slider("Smoothing", 0.0, 0.99, 0.0, 0.01, key="runs_smooth")


@st.fragment(run_every="2s")
def curves() -> None:
    # The metric picker lives in the fragment: a queued run has no metric names yet.
    names = store().metric_names(chosen)
    # RL objectives' surrogate loss is ~0 by construction (advantages sum to zero): lead with reward.
    preferred = [m for m in ("reward/mean", "loss/mixed_nll", "rpt/format_fail", "loss", "entropy/mean")
                 if m in names]
    kept = [m for m in st.session_state.get("runs_metrics", []) if m in names]
    st.session_state["runs_metrics"] = kept or preferred[:2] or names[:1]
    metrics = st.multiselect("Metrics", names, key="runs_metrics")
    if not chosen or not metrics:
        st.caption("Pick runs and metrics to plot.")
        return
    df = store().metrics(chosen, metrics)
    if df.empty:
        st.caption("No metrics logged yet: the first rows arrive a few seconds after the job starts.")
        return
    cols = st.columns(2)
    for i, m in enumerate(metrics):
        cols[i % 2].plotly_chart(curves_figure(df, m, labels, x=x, smoothing=smoothing, markers=False), width="stretch",
                                 key=f"curve_{m}")


curves()

st.subheader("Run details")
ids = list(records)
run_id = st.selectbox("Run", ids, format_func=labels.get, key="runs_detail",
                      index=ids.index(st.query_params["run"]) if st.query_params.get("run") in records else 0)
run = records[run_id]
a, b, c, d = st.columns(4)
locked = read_only()      # a read-only data folder: look, do not touch
if a.button("Cancel", disabled=run["status"] not in ACTIVE or locked, width="stretch"):
    try:
        cancel(run_id, store().data_dir)
        st.toast(f"Cancelling {run_id}…")
    except LabError as e:
        st.error(str(e))
if b.button("Resume from last checkpoint", disabled=run["status"] in ACTIVE or run["status"] == "finished"
            or locked, width="stretch"):
    try:
        resume(run_id, store().data_dir)
        st.toast(f"Resumed {run_id}")
    except LabError as e:
        st.error(str(e))
c.page_link("pages/forking.py", label="Forking tokens →", icon=":material/call_split:", query_params={"run": run_id})
d.page_link("pages/thoughts.py", label="Thoughts →", icon=":material/psychology:", query_params={"run": run_id})

if run.get("error"):
    # A cancel is the user's own doing: say so without the alarm colour of a failure.
    (st.info if run["status"] == "cancelled" else st.error)(run["error"])
with st.form(f"edit_{run_id}"):
    e1, e2 = st.columns(2)
    new_name = e1.text_input("Name", value=run.get("name") or "")
    new_tags = e2.text_input("Tags (comma separated)", value=run.get("tags") or "")
    new_notes = st.text_area("Notes", value=run.get("notes") or "", height=80)
    if st.form_submit_button("Save", disabled=locked):
        store().update_run(run_id, name=new_name.strip()[:200], tags=new_tags.strip()[:500],
                           notes=new_notes[:10_000])
        st.toast("Saved")
        st.rerun()

with st.expander("Configuration, command and environment"):
    st.code(run.get("command") or "", language="bash")
    show_config(run)
    st.caption(f"git {run.get('git_commit')} · device {run.get('device')} · {run.get('versions')}")


@st.fragment(run_every="2s")
def log_tail() -> None:
    fresh = store().get_run(run_id) or run
    st.code(read_log_tail(fresh.get("log_path"), 30) or "(no log yet)", language="text")


with st.expander("Log tail", expanded=run["status"] in ACTIVE or run["status"] == "failed"):
    log_tail()

with st.expander("Delete this run"):
    st.warning("Deletes the run's rows from the database (its files stay in the run folder).")
    if st.button("Delete permanently", disabled=run["status"] in ACTIVE or locked, key=f"del_{run_id}"):
        store().delete_run(run_id)
        st.rerun()

