"""Shared UI pieces for the pages: the store handle, run pickers, token rendering, charts.
Pages hold no SQL or training logic: they read through lab.store and lab.queries, and submit through jobs."""
from __future__ import annotations

import html
import json
import os
from datetime import datetime
from typing import Any, Iterable

import pandas as pd
import streamlit as st

from lab import queries
from lab.errors import LabError
from lab.checkpoint import list_checkpoints
from lab.store import ACTIVE, Store, clean_row

WINDOW = 400  # tokens rendered at once: long texts are shown window by window


def _through_app_navigation() -> None:
    """When the first visit after the server starts is a direct page URL (/runs), Streamlit
    runs pages/runs.py alone in its old pages-folder mode: no sidebar, and a raw list of every
    file in pages/. app.py's st.navigation switches that mode off for the whole server, so
    switch it off here and rerun the same URL through app.py. (Streamlit keeps the mode in a
    class flag; it is checked once, when a page first imports this module.)"""
    from streamlit.runtime.pages_manager import PagesManager
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_through_app_navigation()


def data_dir() -> str:
    return os.environ.get("THOUGHTLAB_DATA_DIR", "data")


@st.cache_resource
def _store(path: str) -> Store:
    return Store(path).init()


def store() -> Store:
    """The data folder's store; a folder the lab cannot use stops the page with the reason."""
    try:
        return _store(data_dir())
    except LabError as e:
        st.error(str(e))
        st.stop()


def read_only() -> bool:
    """True when the data folder cannot be written: pages show runs but start nothing."""
    return store().read_only


def read_only_banner() -> None:
    """Shown in the sidebar (every page) and on top of the pages with actions while the data
    folder is read-only."""
    if read_only():
        st.warning(f"The data folder `{data_dir()}` is read-only: runs and results can be viewed, "
                   "but launching, cancelling, resuming, editing and deleting are turned off. Make "
                   "the folder writable, or copy it and point THOUGHTLAB_DATA_DIR at the copy.",
                   icon=":material/lock:")


def reap() -> None:
    from jobs.manager import reap as _reap
    _reap(data_dir())


def run_label(r: dict[str, Any]) -> str:
    """A run's label in pickers: its name first (the id when it has none), objective and
    model. Stable while the run progresses (no status in it): Streamlit widgets keep their
    value through the label, so a changing label would reset them."""
    name = r.get("name") or ""
    return f"{name} · {r['objective']} · {r['model']} · {r['id']}" if name else \
        f"{r['id']} · {r['objective']} · {r['model']}"


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as dicts with missing values as None (never NaN: a NaN error column
    would otherwise show as an error box saying "nan")."""
    return [clean_row(r) for r in df.to_dict("records")]


def checkpoint_steps(run_id: str) -> list[int]:
    return [s for s, _ in list_checkpoints(data_dir(), run_id)]


def checkpoint_label(r: dict[str, Any]) -> str:
    """A run in a checkpoint picker: name (or id), objective, model and its checkpoint step."""
    steps = r.get("checkpoint_steps") or []
    where = f"checkpoint step {steps[-1]}" if steps else f"{r['status']}: checkpoint when it finishes"
    name = r.get("name") or r["id"]
    return f"{name} · {r['objective']} · {r['model']} · {where}" + (f" · {r['id']}" if r.get("name") else "")


def checkpoint_runs(include_active: bool = False) -> dict[str, dict[str, Any]]:
    """Training runs a model picker can offer, newest first: those with a complete checkpoint
    (`checkpoint_steps` lists them), and with include_active also queued or running runs (an
    evaluation of those waits for their final checkpoint). A run cancelled before its first
    checkpoint is never offered."""
    out = {}
    for r in records(store().list_runs()):
        r["checkpoint_steps"] = checkpoint_steps(r["id"])
        if r["checkpoint_steps"] or (include_active and r["status"] in ACTIVE):
            out[r["id"]] = r
    return out


def queue_places() -> dict[str, str]:
    """Queued job id -> where it stands ("#2 in queue", or what it waits for)."""
    from jobs.queue import queue_positions
    return {k: p.text for k, p in queue_positions(store()).items()}


def pick_run(label: str, *, key: str, objectives: Iterable[str] | None = None,
             table: str | None = None) -> dict[str, Any] | None:
    """A run selectbox (newest first). `table` keeps only runs with rows there."""
    runs = store().list_runs()
    if objectives:
        runs = runs[runs["objective"].isin(list(objectives))]
    if table:
        have = queries.run_ids_with_rows(store(), table)
        runs = runs[runs["id"].isin(have)]
    if runs.empty:
        st.info("No runs with this kind of data yet. Launch one on the **Launch** page.")
        return None
    recs = {r["id"]: r for r in records(runs)}
    ids = list(recs)
    wanted = st.query_params.get("run")
    index = ids.index(wanted) if wanted in ids else 0
    choice = st.selectbox(label, ids, index=index, key=key, format_func=lambda i: run_label(recs[i]))
    return recs[choice]


def pick_step_sample(run_id: str, table: str, key: str) -> tuple[int, int] | None:
    steps = store().sample_steps(run_id, table)
    if not steps:
        st.info("This run has not logged samples yet (they are recorded every `sample_every` steps).")
        return None
    c1, c2 = st.columns([3, 1])
    with c1:
        step = steps[0] if len(steps) == 1 else st.select_slider(
            "Training step", options=steps, value=steps[-1], key=f"{key}_step")
    samples = store().samples_at(run_id, step, table)
    with c2:
        sample = st.selectbox("Sample", samples, key=f"{key}_sample")
    return step, sample


def pick_logged_sample(table: str, key: str) -> tuple[dict[str, Any], int, int]:
    """Run, step and sample pickers for pages that show one logged sample; stops the page
    with a hint when there is nothing to show yet."""
    run = pick_run("Run", key=f"{key}_run", table=table)
    if run is None:
        st.stop()
    picked = pick_step_sample(run["id"], table, key)
    if picked is None:
        st.stop()
    return run, picked[0], picked[1]


# Absolute colour scales: the same shade means the same value on every page, model and text
# (a relative scale painted tiny-random's near-constant 10.70 nats and 0.0005-nat gains dark).
# column -> (value of the darkest shade, what it measures). Values above it saturate.
SCALES = {"entropy": (5.0, "entropy of the prediction, nats"),
          "nll": (10.0, "surprise: NLL of the true token, nats"),
          "help": (1.0, "log-prob gain of the true token from the thoughts, nats"),
          "up": (1.0, "log-prob gain of B over A, nats"),
          "down": (1.0, "log-prob loss of B against A, nats")}


def shown_step_caption(run: dict[str, Any], step: int, sample: int) -> None:
    """Every per-token page names what it shows: the run, the training step and the sample."""
    total = run.get("max_steps")
    st.caption(f"Showing **step {step}**" + (f" of {total}" if total else "") + f", probe sample {sample}, of "
               f"run **{run.get('name') or run['id']}** ({run['objective']}, {run['model']}).")


def color_for(value: float | None, vmax: float, vmin: float = 0.0) -> str:
    """White → orange → red background for a value in [vmin, vmax]."""
    if value is None or pd.isna(value) or vmax <= vmin:
        return "#f3f3f3"
    x = max(0.0, min(1.0, (value - vmin) / (vmax - vmin)))
    r, g, b = 255, int(245 - 160 * x), int(230 - 200 * x)
    return f"rgb({r},{g},{b})"


def scale_legend(value_col: str, vmax: float) -> str:
    """A gradient bar from 0 to vmax with its unit, under a coloured text."""
    what = SCALES.get(value_col, (vmax, value_col))[1]
    stops = ", ".join(color_for(vmax * i / 4, vmax) for i in range(5))
    return (f'<div style="display:flex;align-items:center;gap:8px;font-size:12px;color:#555;margin:4px 0 10px">'
            f'<span>0</span><span style="width:160px;height:10px;border-radius:3px;'
            f'background:linear-gradient(to right, {stops})"></span><span>{vmax:g}+</span>'
            f'<span>colour = {html.escape(what)}</span></div>')


def hover_text(r: dict[str, Any], tooltip_cols: Iterable[str]) -> str:
    """A token's hover: its numbers, then the model's top alternatives with probabilities and
    the rank of the true token (from the records' `extra`, when logged)."""
    lines = [f"pos {r['position']} · {str(r['token'])!r}"] + [f"{c} = {r[c]:.3f}" for c in tooltip_cols
                                        if c in r and r[c] is not None and not pd.isna(r[c])]
    extra = r.get("extra")
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError:
            extra = None
    if isinstance(extra, dict) and extra.get("top"):
        lines.append(f"true token rank {extra.get('rank')}; top {len(extra['top'])}:")
        lines += [f"  {alt!r} {p:.3f}" for alt, p in extra["top"]]
    return "\n".join(lines)


def token_html(tokens: pd.DataFrame, value_col: str, vmax: float | None = None,
               mark_col: str | None = None, selected: int | None = None,
               tooltip_cols: Iterable[str] = ("entropy", "nll", "prob")) -> str:
    """Tokens as coloured spans (value_col → colour on its absolute SCALES range, or [0, vmax]),
    an optional outline on mark_col, a legend, and a hover with the numbers and top-k."""
    vmax = vmax or SCALES.get(value_col, (None,))[0] or float(tokens[value_col].max() or 1.0)
    parts = []
    for r in tokens.to_dict("records"):
        text = html.escape(str(r["token"])).replace("\n", "↵<br>")
        style = f"background:{color_for(r.get(value_col), vmax)};padding:1px 0;border-radius:3px;"
        if mark_col and r.get(mark_col):
            style += "outline:2px solid #7b1fa2;font-weight:600;"
        if selected is not None and r["position"] == selected:
            style += "outline:3px solid #1565c0;"
        tip = html.escape(hover_text(r, tooltip_cols), quote=True).replace("\n", "&#10;")
        parts.append(f'<span title="{tip}" class="tok" style="{style}">{text}</span>')
    return ('<div style="font-family:ui-monospace,monospace;font-size:14px;line-height:1.9;'
            'white-space:pre-wrap;color:#222">' + "".join(parts) + "</div>" + scale_legend(value_col, vmax))


def windowed(tokens: pd.DataFrame, key: str) -> pd.DataFrame:
    """Only WINDOW tokens at a time, with a slider to move along long texts."""
    n = len(tokens)
    if n <= WINDOW:
        return tokens
    start = st.slider("Window start (token position)", 0, n - WINDOW, 0, step=50, key=f"{key}_win")
    return tokens.iloc[start:start + WINDOW]


def recent_step_time(run_id: str) -> float | None:
    """Mean duration of the run's last 10 steps (None before the first step is logged)."""
    return queries.recent_step_time(store(), run_id)


PROGRESS = st.column_config.ProgressColumn("progress", min_value=0, max_value=1)


def with_progress(jobs: pd.DataFrame) -> pd.DataFrame:
    """A runs table with a `progress` fraction (for PROGRESS) and first lines of errors."""
    view = jobs.copy()
    view["progress"] = (view["step"].fillna(0) / view["max_steps"].fillna(1).clip(lower=1)).clip(0, 1)
    view["error"] = view["error"].fillna("").str.split("\n").str[0].str[:120]
    return view


def rerun_when_changed(key: str, signature: tuple) -> None:
    """Inside a polling fragment: rerun the whole page when a job starts or ends, so the
    buttons, pickers and results outside the fragment follow."""
    if st.session_state.get(key, signature) != signature:
        st.session_state[key] = signature
        st.rerun(scope="app")
    st.session_state[key] = signature


def progress_text(run: dict[str, Any]) -> tuple[float, str]:
    """Fraction done and a line with the ETA: from recent step times for training runs (the
    model load does not count), from the elapsed time per percent for evaluation jobs."""
    step, total = int(run.get("step") or 0), int(run.get("max_steps") or 1)
    frac = min(step / max(total, 1), 1.0)
    started = run.get("started_at")
    if run["status"] == "queued":
        waiting = str(run.get("phase") or "")
        return 0.0, f"queued · {waiting if waiting.startswith('waiting') else 'waiting for a free device slot'}"
    if run["status"] == "running" and step == 0 and run.get("phase"):
        return 0.0, f"running · {run['phase']}"
    if run["status"] != "running" or not started or step == 0:
        return frac, f"{run['status']} · step {step}/{total}"
    elapsed = (datetime.utcnow() - pd.Timestamp(started).to_pydatetime()).total_seconds()
    per_step = recent_step_time(run["id"]) if run.get("kind", "train") == "train" else None
    eta = (per_step or elapsed / step) * (total - step)
    phase = str(run.get("phase") or "")
    inside = f" · now {phase}" if phase.startswith("step ") else ""   # a long step's progress note
    return frac, f"running · step {step}/{total} · {elapsed:.0f}s elapsed · ETA {eta:.0f}s{inside}"


def show_config(run: dict[str, Any]) -> None:
    try:
        st.json(json.loads(run.get("config") or "{}"), expanded=False)
    except json.JSONDecodeError:
        st.code(run.get("config") or "")
