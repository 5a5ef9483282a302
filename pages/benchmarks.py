"""Benchmarks: results of experiments (scores, paired deltas vs the base model and vs NTP,
the Quiet-STaR thought control, flipped items), HTML report export, a single-evaluation
form, the experiment launcher and the exact prompts. Numbers come from lab.experiments,
figures and reports from lab.report."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from jobs.manager import submit_eval
from lab import experiments as ex
from lab import report
from lab.errors import LabError
from lab.evaluation import BENCHMARKS, THOUGHT_MODES, EvalSpec, prompts
from lab.evaluation.runner import run_id_of
from lab.models import PRESETS as MODEL_PRESETS
from lab.objectives import available
from lab.store import ACTIVE
from pages.common import PROGRESS, data_dir, reap, rerun_when_changed, run_label, store, with_progress

st.title("Benchmarks")
st.caption("Does token-level reasoning during pretraining beat plain next-token prediction at the "
           "same compute? Scores on the same items, paired deltas with 95 % bootstrap intervals "
           "and McNemar tests, and the items that flipped.")

SCORE = st.column_config.NumberColumn(format="%.3f")
FLOPS = st.column_config.NumberColumn(format="%.3e")


# ---- cached computations (an eval never changes once written: key on the eval ids) ----------
@st.cache_data(max_entries=64, show_spinner=False)
def _deltas(exp: str, against: str, evals: tuple[str, ...]) -> pd.DataFrame:
    return ex.deltas(store(), exp, against)


@st.cache_data(max_entries=64, show_spinner=False)
def _thought_deltas(exp: str, evals: tuple[str, ...]) -> pd.DataFrame:
    return ex.thought_deltas(store(), exp)


@st.cache_data(max_entries=64, show_spinner=False)
def _compare_pair(eval_ref: str, eval_id: str) -> pd.DataFrame:
    """Evals never change once written: their bootstrap comparison is cached."""
    rows = {r["eval_id"]: r for r in ex.results_for_evals(store(), [eval_ref, eval_id]).to_dict("records")}
    return ex.compare_pairs(store(), [(rows[eval_ref], rows[eval_id])])


@st.cache_data(max_entries=64, show_spinner=False)
def _flipped(eval_ref: str, eval_id: str) -> pd.DataFrame:
    return ex.flipped_items(store(), eval_ref, eval_id)


# ---- results ------------------------------------------------------------------------------------
def experiment_status(exp: str) -> None:
    @st.fragment(run_every="2s")
    def table() -> None:
        reap()
        jobs = ex.experiment_runs(store(), exp)
        n_active = int(jobs["status"].isin(ACTIVE).sum())
        st.dataframe(with_progress(jobs)[["id", "kind", "name", "status", "progress", "step",
                                          "max_steps", "error"]],
                     hide_index=True, width="stretch", column_config={"progress": PROGRESS})
        st.caption(f"{n_active} job(s) still queued or running." if n_active else "All jobs ended.")
        rerun_when_changed(f"bm_sig_{exp}", tuple(zip(jobs["id"], jobs["status"])))

    jobs = ex.experiment_runs(store(), exp)
    done = int((jobs["status"] == "finished").sum())
    with st.expander(f"Status: {done} of {len(jobs)} jobs finished",
                     expanded=bool(jobs["status"].isin(ACTIVE).any() or (jobs["status"] == "failed").any())):
        table()


def score_charts(res: pd.DataFrame, key: str) -> None:
    for hib in (True, False):
        if (res["higher_is_better"] == hib).any():
            st.plotly_chart(report.scores_figure(res, higher_is_better=hib), width="stretch",
                            key=f"{key}_scores_{hib}")
    with st.expander("Scores table"):
        st.dataframe(res[["label", "benchmark", "mode", "thought_mode", "score", "stderr", "n",
                          "steps", "flops", "eval_id"]],
                     hide_index=True, width="stretch",
                     column_config={"score": SCORE, "stderr": SCORE, "flops": FLOPS})


def delta_view(d: pd.DataFrame, title: str, key: str) -> None:
    if d.empty:
        st.info("No paired comparison yet: it needs both evals of a benchmark to have finished.")
        return
    st.plotly_chart(report.deltas_figure(d, title), width="stretch", key=key)
    small = {c: st.column_config.NumberColumn(c, format="%.3f", width="small")
             for c in ("ref score", "score", "delta", "CI low", "CI high")}
    small |= {c: st.column_config.NumberColumn(c, width="small") for c in ("n", "right→wrong", "wrong→right")}
    st.dataframe(report.delta_table(d), hide_index=True, width="stretch",
                 column_config=small | {"McNemar p": st.column_config.NumberColumn(format="%.3g", width="small")})


def drill_down(comparisons: pd.DataFrame, key: str) -> None:
    """Pick one comparison; list the items it flipped, with prompt, target and both outputs."""
    st.subheader("Items that flipped")
    binary = comparisons[comparisons["n_right_to_wrong"].notna()]
    if binary.empty:
        st.caption("No accuracy comparison to drill into yet.")
        return
    rows = binary.to_dict("records")
    i = st.selectbox("Comparison", range(len(rows)), key=f"{key}_cmp",
                     format_func=lambda j: f"{rows[j]['label']} vs {rows[j]['reference']} · "
                                           f"{rows[j]['benchmark']} ({rows[j]['delta']:+.3f}; "
                                           f"{int(rows[j]['n_right_to_wrong'])} right→wrong, "
                                           f"{int(rows[j]['n_wrong_to_right'])} wrong→right)")
    r = rows[i]
    items = _flipped(r["eval_ref"], r["eval_id"])
    if items.empty:
        st.caption("No item changed its outcome.")
        return
    for direction in ("right→wrong", "wrong→right"):
        part = items[items["direction"] == direction].rename(
            columns={"prediction_ref": f"{r['reference']} said", "prediction": f"{r['label']} said",
                     "output_ref": f"{r['reference']} wrote", "output": f"{r['label']} wrote"})
        st.markdown(f"**{direction}** ({len(part)} item{'' if len(part) == 1 else 's'})")
        if not part.empty:
            st.dataframe(part.drop(columns="direction"), hide_index=True, width="stretch",
                         column_config={"prompt": st.column_config.TextColumn(width="large")})


def report_download(kind: str, ident: str, key: str) -> None:
    """One click exports: the report is built section by section (progress with ETA) and saved
    under <data>/exports/; the browser download is then offered for the saved file."""
    lab_store = store()
    build = report.experiment_report_html if kind == "experiment" else report.run_report_html
    file_name = report.report_file_name(kind, ident)
    if st.button(f"Export {kind} report", icon=":material/article:", key=f"{key}_build"):
        bar = st.progress(0.0, text="Building the report…")
        try:
            html = build(lab_store, ident, progress=lambda f, m: bar.progress(f, text=m))
            target = Path(data_dir()) / "exports" / file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(html, encoding="utf-8")
            st.session_state[key] = (file_name, str(target))
        except Exception as e:  # noqa: BLE001 - the page stays usable; the reason is shown
            st.error(f"The report could not be exported: {e}")
        finally:
            bar.empty()
    built = st.session_state.get(key)
    if built and built[0] == file_name and Path(built[1]).exists():
        st.caption(f"Saved to `{built[1]}`.")
        st.download_button(f"Download {kind} report (HTML)", icon=":material/download:",
                           data=lambda: Path(built[1]).read_bytes(),   # read on click only
                           file_name=file_name, mime="text/html", on_click="ignore",
                           key=f"{key}_download")


def export_buttons(exp: str | None, key: str) -> None:
    st.subheader("Export")
    st.caption("A self-contained HTML report (charts included, opens offline) for people who "
               "will not open the lab. Also from the command line: `python -m lab report ID`.")
    c1, c2 = st.columns(2)
    if exp:
        with c1:
            report_download("experiment", exp, f"{key}_exp_report")
    runs = store().list_runs()
    if exp:
        runs = runs[runs["experiment"] == exp]
    if runs.empty:
        return
    records = {r["id"]: r for r in runs.to_dict("records")}
    with c2:
        rid = st.selectbox("Run for a run report", list(records), key=f"{key}_report_run",
                           format_func=lambda i: run_label(records[i]))
        report_download("run", rid, f"{key}_run_report")


def experiment_view() -> None:
    exps = ex.experiments(store())
    if exps.empty:
        st.info("No experiment yet. Start one under **Launch an experiment** below (the quick CPU "
                "preset takes a few minutes), or look at individual evals.")
        return
    recs = {r["id"]: r for r in exps.to_dict("records")}
    ids = list(recs)
    wanted = st.query_params.get("experiment")
    exp = st.selectbox("Experiment", ids, index=ids.index(wanted) if wanted in ids else 0,
                       key="bm_experiment",
                       format_func=lambda i: f"{i} · {recs[i]['model'] or '?'} · {recs[i]['objectives'] or 'evals only'}"
                                             + (f" · {int(recs[i]['active'])} active" if recs[i]["active"] else ""))
    experiment_status(exp)
    compute = ex.compute_table(store(), exp)
    if not compute.empty:
        st.subheader("Compute: what was matched")
        budget = compute["budget_flops"].max()
        st.caption(f"Every run stopped at a budget of {budget:.3g} training FLOPs (NTP's cost of the "
                   "budget steps); costlier objectives take fewer steps, and a run may overshoot by "
                   "its last step. ntp@STEP rows below are NTP's checkpoint at another objective's "
                   "step count: the matched-steps comparison." if budget else
                   "Every run did the same number of steps; their FLOPs differ.")
        st.dataframe(compute[["objective", "status", "steps", "flops", "budget_flops", "budget_share",
                              "flops_per_step", "run_id"]], hide_index=True, width="stretch",
                     column_config={"flops": st.column_config.NumberColumn("FLOPs", format="%.3e"),
                                    "budget_flops": st.column_config.NumberColumn("budget (FLOPs)", format="%.3e"),
                                    "flops_per_step": st.column_config.NumberColumn("FLOPs per step", format="%.3e"),
                                    "budget_share": st.column_config.NumberColumn("share of budget",
                                                                                  format="%.2f")})
    res = ex.experiment_results(store(), exp)
    if res.empty:
        st.info("No evaluation of this experiment has finished yet: results appear here as the "
                "eval jobs end.")
        export_buttons(exp, "bm")
        return
    sig = tuple(res["eval_id"])
    st.subheader("Scores")
    score_charts(res, "bm")

    st.subheader("Deltas")
    against = st.radio("Compared with", ["ntp", "base"], horizontal=True, key="bm_against",
                       format_func={"ntp": "NTP (same FLOPs; ntp@STEP = same steps)",
                                    "base": "base model (untrained)"}.get)
    d = _deltas(exp, against, sig)
    delta_view(d, f"Paired deltas vs {'NTP' if against == 'ntp' else 'the base model'}", "bm_deltas")
    if against == "base":
        st.caption("Row `base · gsm8k-cot vs base` (when GSM8K is in the experiment) is the "
                   "latent-reasoning control: the untrained model with chain-of-thought prompting.")

    thought = _thought_deltas(exp, sig)
    qs = res[res["objective"] == "quiet-star"]
    if not qs.empty:
        st.subheader("Quiet-STaR: no thoughts vs thoughts vs corrupted thoughts")
        st.caption("The same checkpoint scored without thoughts, with its own thoughts, and with "
                   "thoughts replaced by random tokens of the same length (objectives.md §5). "
                   "Corrupted ≈ real means the thoughts act as scaffolding, not reasoning.")
        table = qs.pivot_table(index="benchmark", columns="thought_mode", values="score", aggfunc="last")
        st.dataframe(table[[m for m in THOUGHT_MODES if m in table.columns]], width="stretch",
                     column_config={m: SCORE for m in THOUGHT_MODES})
        delta_view(thought, "Thought modes, paired", "bm_thought")

    drill_down(pd.concat([d, thought], ignore_index=True), "bm")
    export_buttons(exp, "bm")


def evals_view() -> None:
    evs = store().query("SELECT id, model, benchmark, score, n_items, config, created_at FROM evals "
                        "ORDER BY created_at DESC")
    if evs.empty:
        st.info("No evals yet: run one under **Run one evaluation** below.")
        return
    mode = {r["id"]: json.loads(r["config"] or "{}").get("spec", {}).get("thought_mode", "none")
            for r in evs.to_dict("records")}
    labels = {r["id"]: f"{r['id']} · {r['model']} · {r['benchmark']}"
                       + ("" if mode[r["id"]] == "none" else f" · {mode[r['id']]}")
                       + f" · {r['score']:.3f} (n={r['n_items']})" for r in evs.to_dict("records")}
    chosen = st.multiselect("Evals", list(labels), default=list(labels)[:2], format_func=labels.get,
                            key="bm_evals")
    res = ex.results_for_evals(store(), chosen)
    if res.empty:
        return
    score_charts(res, "ev")
    if len(chosen) >= 2:
        c1, c2 = st.columns(2)
        a = c1.selectbox("Reference (A)", chosen, format_func=labels.get, key="bm_ev_a")
        b = c2.selectbox("Compared (B)", chosen, index=1, format_func=labels.get, key="bm_ev_b")
        if a != b:
            d = _compare_pair(a, b)
            if d.empty:
                st.warning("These two evals share no items (different benchmarks, data or limits).")
            else:
                delta_view(d, "B − A", "ev_delta")
                drill_down(d, "ev")
    export_buttons(None, "ev")


# ---- single evaluation --------------------------------------------------------------------------
def default_data(benchmark: str) -> str:
    family = BENCHMARKS[benchmark].data
    path = ex.DEFAULT_DATA.get(family)
    return str(path) if path is not None and path.exists() else ""


def data_input(benchmark: str, key: str) -> str | None:
    """A data path for benchmarks that read a file (one box per data family, so switching
    benchmark keeps what was typed); None for the built-in ones."""
    family = BENCHMARKS[benchmark].data
    if family not in ("gsm8k", "csqa"):
        st.caption("Built-in problems: no data file needed.")
        return None
    st.session_state.setdefault(f"{key}_{family}", default_data(benchmark))
    return st.text_input(f"{family} data file (.jsonl or hf:NAME)", key=f"{key}_{family}") or None


def eval_form() -> None:
    st.caption("Queues one evaluation as a background job; a checkpoint that is still training is "
               "evaluated once its run finishes.")
    runs = store().list_runs()
    run_recs = {r["id"]: r for r in runs.to_dict("records")}
    c1, c2 = st.columns(2)
    with c1:
        source = st.radio("Model", ["Preset", "Checkpoint of a run", "Folder or hub id"], horizontal=True,
                          key="ev_source")
        if source == "Preset":
            model = st.selectbox("Model preset", list(MODEL_PRESETS), key="ev_preset")
        elif source == "Checkpoint of a run":
            rid = st.selectbox("Run", list(run_recs), key="ev_run",
                               format_func=lambda i: run_label(run_recs[i])) if run_recs else None
            model = f"run:{rid}" if rid else ""
        else:
            model = st.text_input("Model folder or Hugging Face id", key="ev_text")
        benchmark = st.selectbox("Benchmark", list(BENCHMARKS), key="ev_benchmark",
                                 help="\n".join(f"- {b.name}: {b.description}" for b in BENCHMARKS.values()))
        data = data_input(benchmark, "ev_data")
    with c2:
        limit = st.number_input("Items (0 = all)", 0, 100_000, 50, key="ev_limit")
        max_new = st.number_input("Max new tokens (0 = benchmark default)", 0, 4096, 0, key="ev_max_new")
        thought_mode = st.selectbox("Thought mode (Quiet-STaR checkpoints)", THOUGHT_MODES, key="ev_thought")
        exps = ex.experiments(store())["id"].tolist()
        experiment = st.selectbox("Add to experiment", [""] + exps, key="ev_experiment",
                                  format_func=lambda e: e or "(none)")
    if st.button("Queue evaluation", type="primary", key="ev_submit"):
        rid = run_id_of(model)
        spec = EvalSpec(model=model, benchmark=benchmark, data=data, limit=int(limit),
                        max_new_tokens=int(max_new), thought_mode=thought_mode, run_id=rid)
        try:
            job = submit_eval(spec, data_dir(), experiment=experiment)   # waits for a training run
            after = json.loads(store().get_run(job)["config"]).get("after")
            st.success(f"Queued eval job {job}" + (f" (after run {rid} finishes)" if after else ""))
        except LabError as e:
            st.error(str(e))
    eval_jobs()


@st.fragment(run_every="2s")
def eval_jobs() -> None:
    jobs = store().list_runs(kind="eval").head(15)
    if jobs.empty:
        # Render something: an auto-refreshing fragment that draws nothing makes the browser
        # drop the page navigation (seen with Streamlit 1.67).
        st.caption("No eval jobs yet.")
        return
    st.markdown("**Recent eval jobs**")
    st.dataframe(with_progress(jobs)[["id", "name", "status", "progress", "experiment", "created_at", "error"]],
                 hide_index=True, width="stretch",
                 column_config={"progress": PROGRESS,
                                "created_at": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss")})


# ---- experiment launcher ------------------------------------------------------------------------
LAUNCH_KEYS = ("model", "corpus", "budget_steps", "budget_mode", "benchmarks", "limit", "max_new_tokens")


def apply_experiment_preset() -> None:
    p = ex.EXPERIMENT_PRESETS[st.session_state["xp_preset"]]
    for k in LAUNCH_KEYS:
        st.session_state[f"xp_{k}"] = p[k]
    st.session_state["xp_base_cfg"] = json.dumps(p["base_cfg"])
    st.session_state["xp_params"] = json.dumps(p["params"])


def experiment_form() -> None:
    st.caption("Trains every chosen objective on the same model and corpus with the same compute "
               "budget, then evaluates each checkpoint, the base model and the controls on the same "
               "items. All jobs run in the background.")
    names = list(ex.EXPERIMENT_PRESETS)
    if "xp_preset" not in st.session_state:
        st.session_state["xp_preset"] = names[0]
        apply_experiment_preset()
    st.selectbox("Preset", names, key="xp_preset", on_change=apply_experiment_preset)
    c1, c2 = st.columns(2)
    with c1:
        model = st.text_input("Model (preset, folder, hub id or run:ID)", key="xp_model",
                              help="Presets: " + ", ".join(MODEL_PRESETS))
        corpus = st.text_input("Corpus (builtin, a .txt/.jsonl/.parquet path, or hf:NAME)", key="xp_corpus")
        objectives = st.multiselect("Objectives", available(), default=available(), key="xp_objectives")
        budget_steps = st.number_input("Budget (NTP steps)", 1, 100_000, key="xp_budget_steps")
        budget_mode = st.radio("Match", ex.BUDGET_MODES, horizontal=True, key="xp_budget_mode",
                               format_func={"flops": "training FLOPs (budget = that many NTP steps)",
                                            "steps": "optimizer steps"}.get)
    with c2:
        benchmarks = st.multiselect("Benchmarks", list(BENCHMARKS), key="xp_benchmarks")
        paths = {fam: st.text_input(f"{fam} data file", value=default_data(bench), key=f"xp_data_{fam}")
                 for fam, bench in (("gsm8k", "gsm8k"), ("csqa", "csqa"))}
        limit = st.number_input("Items per benchmark (0 = all)", 0, 100_000, key="xp_limit")
        max_new = st.number_input("Max new tokens (0 = benchmark default)", 0, 4096, key="xp_max_new_tokens")
        cot = st.checkbox("Base model with and without chain of thought (needs GSM8K)", value=True,
                          key="xp_cot")
        steps_ctl = st.checkbox(
            "Also compare with NTP at matched steps", value=True, key="xp_steps_control",
            disabled=budget_mode != "flops",
            help="At a FLOP budget a costlier objective takes fewer steps. NTP then starts after "
                 "the other runs, keeps a checkpoint at each one's step count, and those "
                 "checkpoints are evaluated too.")
    with st.expander("Training settings and objective settings (JSON)"):
        base_text = st.text_area("Training settings (RunConfig fields)", key="xp_base_cfg", height=80)
        params_text = st.text_area("Objective settings ({objective: {param: value}})", key="xp_params",
                                   height=80)
    name = st.text_input("Name (optional)", key="xp_name")
    if st.button("Launch experiment", type="primary", key="xp_launch"):
        try:
            base_cfg, params = json.loads(base_text or "{}"), json.loads(params_text or "{}")
        except json.JSONDecodeError as e:
            st.error(f"The JSON settings are not valid JSON: {e}")
            return
        try:
            with st.spinner("Validating and starting the jobs…"):
                exp = ex.launch_experiment(
                    model.strip(), corpus.strip() or "builtin", objectives=objectives,
                    budget_steps=int(budget_steps), budget_mode=budget_mode, benchmarks=benchmarks,
                    data={k: v.strip() for k, v in paths.items() if v.strip()}, limit=int(limit),
                    max_new_tokens=int(max_new), base_cfg=base_cfg, params=params, cot_control=cot,
                    steps_control=steps_ctl,
                    name=name.strip(), data_dir=data_dir())
        except LabError as e:
            st.error(str(e))
            return
        st.query_params["experiment"] = exp
        st.session_state.pop("bm_experiment", None)
        st.success(f"Started experiment {exp}: its status and results are under **Results** above.")


# ---- prompts ------------------------------------------------------------------------------------
def prompts_view() -> None:
    st.caption(f"Prompt version {prompts.PROMPT_VERSION} (stored with every eval). Plain text, no chat "
               "template, no few-shot examples, following Quiet-STaR's zero-shot evaluation; the "
               "full description is in docs/evaluation.md.")
    q = "{question}"
    letters = list("ABCDE")
    shown = {
        "gsm8k (direct answer)": prompts.gsm8k_direct(q),
        "gsm8k-cot, stage 1": prompts.gsm8k_cot(q),
        "gsm8k-cot, stage 2": prompts.gsm8k_cot_final(prompts.gsm8k_cot(q), "{reasoning}"),
        "csqa / csqa-gen (csqa scores ' {choice text}' after it)":
            prompts.csqa(q, letters, [f"{{choice {x}}}" for x in letters]),
        "math-test / math-longer / math-format": prompts.math_problem(q),
    }
    for title, text in shown.items():
        st.markdown(f"**{title}**")
        st.code(text, language="text")
    st.markdown("**heldout-nll**: each document as is (no prompt), cut to 1,024 tokens.")


# ---- layout -------------------------------------------------------------------------------------
results, single, launch, prompt_tab = st.tabs(["Results", "Run one evaluation", "Launch an experiment",
                                               "Prompts"])
with results:
    view = st.radio("Show", ["Experiment", "Individual evals"], horizontal=True, key="bm_view")
    if view == "Experiment":
        experiment_view()
    else:
        evals_view()
with single:
    eval_form()
with launch:
    experiment_form()
with prompt_tab:
    prompts_view()
