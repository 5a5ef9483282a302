"""Runs: status and progress of every run, live curves (several runs overlaid), log tail,
cancel/resume, rename/tag/notes/delete."""
from __future__ import annotations

import streamlit as st

import pandas as pd

from jobs.manager import cancel, read_log_tail, resume
from lab import queries
from lab.errors import LabError
from lab.store import ACTIVE
from lab.report import curves_figure
from pages.common import (PROGRESS, checkpoint_steps, progress_text, queue_places, read_only, read_only_banner,
                          reap, records, rerun_when_changed, run_label, show_config, store)

FEW_POINTS = 30      # curves with at most this many points per run also get markers

st.title("Runs")
read_only_banner()


def status_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per job, progress and where it stands (ETA, queue position) in the row itself."""
    places = queue_places()
    rows = []
    for r in records(runs):
        frac, text = progress_text(r)
        if r["id"] in places:
            text = f"queued · {places[r['id']]}"
        rows.append({"id": r["id"], "name": r.get("name") or "", "status": r["status"], "progress": frac,
                     "state": text, "objective": r["objective"], "model": r["model"], "kind": r["kind"],
                     "tags": r.get("tags") or "", "created": r["created_at"],
                     "error": (r.get("error") or "").split("\n")[0][:120]})
    return pd.DataFrame(rows)


TABLE_COLUMNS = {"progress": PROGRESS, "state": st.column_config.TextColumn("where it stands", width="large"),
                 "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss")}


@st.fragment(run_every="2s")
def run_table() -> None:
    reap()
    runs = store().list_runs(kind=None)
    if runs.empty:
        st.info("No runs yet. Start one on the **Launch** page.")
        return
    counts = runs["status"].value_counts()
    st.markdown(" · ".join(f"**{int(counts[s])}** {s}" for s in ("running", "queued", "finished", "failed",
                                                                 "cancelled") if s in counts))
    alone = runs[runs["experiment"].fillna("") == ""]
    if not alone.empty:
        st.dataframe(status_table(alone), hide_index=True, width="stretch", column_config=TABLE_COLUMNS)
    for exp, jobs in runs[runs["experiment"].fillna("") != ""].groupby("experiment", sort=False):
        done, active = int((jobs["status"] == "finished").sum()), int(jobs["status"].isin(ACTIVE).sum())
        with st.expander(f"Experiment {exp}: {done}/{len(jobs)} jobs finished, {active} queued or running"):
            st.dataframe(status_table(jobs), hide_index=True, width="stretch", column_config=TABLE_COLUMNS)
    # A run started, ended, appeared or logged its first metrics: rerun the whole page so
    # buttons and pickers (outside this fragment) follow.
    rerun_when_changed("runs_signature", (tuple(zip(runs["id"], runs["status"])),
                                          tuple(sorted(queries.run_ids_with_rows(store(), "metrics")))))


run_table()

runs = store().list_runs(kind=None)   # training runs and evaluation jobs
if runs.empty:
    st.stop()
records_by_id = {r["id"]: r for r in records(runs)}
train_ids = [r["id"] for r in records_by_id.values() if r["kind"] == "train"]
labels = {i: run_label(r) for i, r in records_by_id.items()}

st.subheader("Curves")
with_metrics = queries.run_ids_with_rows(store(), "metrics")
newest_with_data = [i for i in train_ids if i in with_metrics][:1]      # a queued run has nothing to draw
default = [st.query_params["run"]] if st.query_params.get("run") in train_ids else newest_with_data
# The widget keeps its own value across reruns, so its default applies only once: until the
# user picks runs, follow the default (the newest run that has metrics appears on its own).
picked = [i for i in st.session_state.get("runs_chosen", []) if i in train_ids]
st.session_state["runs_chosen"] = picked or default
chosen = st.multiselect("Runs to compare", train_ids, format_func=labels.get, key="runs_chosen")
# The pickers sit outside the 2-second refresh, so an open dropdown stays open; a job that
# starts logging new metrics reruns the page through rerun_when_changed.
names = store().metric_names(chosen)
# RL objectives' surrogate loss is ~0 by construction (advantages sum to zero): lead with reward.
preferred = [m for m in ("reward/mean", "loss/mixed_nll", "rpt/format_fail", "loss", "entropy/mean") if m in names]
kept = [m for m in st.session_state.get("runs_metrics", []) if m in names]
st.session_state["runs_metrics"] = kept or preferred[:2] or names[:1]
c1, c2, c3 = st.columns([3, 2, 2])
metrics = c1.multiselect("Metrics", names, key="runs_metrics")
x = c2.radio("x axis", ["step", "wall_time", "flops"], horizontal=True, key="runs_x",
             format_func={"step": "step", "wall_time": "wall time", "flops": "FLOPs"}.get)
smoothing = c3.slider("Smoothing", 0.0, 0.99, 0.0, 0.01, key="runs_smooth")


@st.fragment(run_every="2s")
def curves() -> None:
    if not chosen or not metrics:
        st.caption("Pick runs and metrics to plot." if chosen else
                   "No run has logged metrics yet: the first rows arrive a few seconds after a job starts.")
        return
    df = store().metrics(chosen, metrics)
    if df.empty:
        st.caption("No metrics logged yet: the first rows arrive a few seconds after the job starts.")
        return
    few = int(df.groupby(["run_id", "name"]).size().max()) <= FEW_POINTS     # a lone point needs a marker
    cols = st.columns(2)
    for i, m in enumerate(metrics):
        cols[i % 2].plotly_chart(curves_figure(df, m, labels, x=x, smoothing=smoothing, markers=few),
                                 width="stretch", key=f"curve_{m}")
    st.caption("One line per run; hover a point for its value. Markers are drawn while runs have few "
               "logged steps.")


curves()

st.subheader("Run details")
ids = list(records_by_id)
run_id = st.selectbox("Run", ids, format_func=labels.get, key="runs_detail",
                      index=ids.index(st.query_params["run"]) if st.query_params.get("run") in records_by_id else 0)
run = records_by_id[run_id]
steps_saved = checkpoint_steps(run_id) if run["kind"] == "train" else []
a, b, c, d = st.columns(4)
locked = read_only()      # a read-only data folder: look, do not touch
if a.button("Cancel", disabled=run["status"] not in ACTIVE or locked, width="stretch"):
    try:
        cancel(run_id, store().data_dir)
        st.toast(f"Cancelling {run_id}…")
    except LabError as e:
        st.error(str(e))
if b.button("Resume from last checkpoint", disabled=run["status"] in ACTIVE or run["status"] == "finished"
            or not steps_saved or locked, width="stretch",
            help=f"Continues from step {steps_saved[-1]}." if steps_saved else
            "This run has no checkpoint to resume from."):
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

