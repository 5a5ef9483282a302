"""Benchmarks: results of experiments (the answer in words, one progress bar, scores across
seeds, seed-pooled deltas vs the reference arm and vs the base model, the Quiet-STaR thought
control, training curves with seed bands, flipped items), HTML report export, a
single-evaluation form, the experiment launcher and the exact prompts. Numbers come from
lab.experiments, figures from lab.figures, readable tables from lab.report."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from jobs.manager import submit_eval
from lab import experiments as ex
from lab import report
from lab.errors import LabError
from lab.evaluation import BENCHMARKS, THOUGHT_MODES, EvalSpec, prompts
from lab.evaluation.spec import EVAL_PRECISIONS
from lab.evaluation.runner import run_id_of
from lab.experiments import results as xr
from lab.experiments import takeaways
from lab.experiments.summary import experiment_summary
from lab.figures import arm_colors, band_curves_figure, pooled_deltas_figure, seed_scores_figure
from lab.models import PRESETS as MODEL_PRESETS
from pages.common import (PROGRESS, checkpoint_label, checkpoint_runs, data_dir, reap, records, rerun_when_changed,
                          run_label, store, with_progress)
from pages.experiment_form import experiment_form

st.title("Benchmarks")
st.caption("Does token-level reasoning during pretraining beat plain next-token prediction at the "
           "same compute? Scores on the same items, with several seeds per arm; deltas pooled over "
           "seeds and items with 95 % intervals, and whether they exceed the seed-to-seed spread.")

SCORE = st.column_config.NumberColumn(format="%.3f")
FLOPS = st.column_config.NumberColumn(format="%.3e")
CURVES = [("loss", "Training loss"), ("entropy/mean", "Mean next-token entropy (nats)"),
          ("reward/mean", "Mean thought reward"), ("loss/mixed_nll", "NLL with thoughts")]


# ---- cached computations (an eval never changes once written: key on the eval ids) ----------
@st.cache_data(max_entries=32, show_spinner="Pooling seeds and items…")
def _pooled(exp: str, against: str, evals: tuple[str, ...]) -> pd.DataFrame:
    return ex.pooled_deltas(store(), exp, against)


@st.cache_data(max_entries=32, show_spinner=False)
def _thought_deltas(exp: str, evals: tuple[str, ...]) -> pd.DataFrame:
    return ex.thought_deltas(store(), exp)


@st.cache_data(max_entries=32, show_spinner=False)
def _summary(exp: str, evals: tuple[str, ...], jobs: tuple) -> list[str]:
    return experiment_summary(store(), exp, vs_reference=_pooled(exp, "reference", evals),
                              thoughts=_thought_deltas(exp, evals))


@st.cache_data(max_entries=64, show_spinner=False)
def _compare_pair(eval_ref: str, eval_id: str) -> pd.DataFrame:
    """Evals never change once written: their bootstrap comparison is cached."""
    rows = {r["eval_id"]: r for r in ex.results_for_evals(store(), [eval_ref, eval_id]).to_dict("records")
            if r["primary"]}
    return ex.compare_pairs(store(), [(rows[eval_ref], rows[eval_id])])


@st.cache_data(max_entries=64, show_spinner=False)
def _flipped(eval_ref: str, eval_id: str) -> pd.DataFrame:
    return ex.flipped_items(store(), eval_ref, eval_id)


# ---- results ------------------------------------------------------------------------------------
def experiment_status(exp: str) -> None:
    """One progress bar with an ETA for the whole experiment, and its jobs."""
    @st.fragment(run_every="2s")
    def live() -> None:
        reap()
        p = ex.experiment_progress(store(), exp)
        if p.state == "failed":
            st.error(f"The experiment could not start: {p.error}")
            return
        eta = f" · ETA {p.eta_s / 60:.0f} min" if p.eta_s and p.state == "running" else ""
        st.progress(p.fraction, text=f"{p.fraction:.0%} of the estimated work done{eta} · {p.message()}")
        if p.stalled:
            st.warning("The experiment's driver stopped before starting every job.")
            if st.button("Resume the experiment", key=f"bm_resume_{exp}"):
                ex.resume(exp, data_dir())
        jobs = ex.experiment_runs(store(), exp)
        with st.expander(f"Jobs ({len(jobs)})", expanded=bool((jobs["status"] == "failed").any())):
            st.dataframe(with_progress(jobs)[["id", "kind", "arm", "seed", "benchmarks", "status",
                                              "progress", "phase", "error"]],
                         hide_index=True, width="stretch", column_config={"progress": PROGRESS})
        rerun_when_changed(f"bm_sig_{exp}", (p.state, tuple(zip(jobs["id"], jobs["status"]))))
    live()


def design(exp: str) -> None:
    spec = ex.stored_spec(data_dir(), exp)
    state = ex.read_state(data_dir(), exp)
    if spec is None:
        return
    st.caption(f"**{spec.title or exp}** · model `{spec.model}` · "
               + (f"pretraining {spec.pretrain.steps} NTP steps · " if spec.pretrain.steps else "no pretraining · ")
               + f"{len(spec.arms)} arms × {len(spec.seeds)} seeds · budget {spec.branch.budget_steps} "
               f"NTP steps ({spec.branch.budget_mode}) · " + ", ".join(spec.evaluation.benchmarks))
    with st.expander("The spec (YAML) and its command"):
        if state.get("command"):
            st.code(state["command"], language="bash")
        text = xr.spec_text(store(), exp)
        st.code(text, language="yaml")
        st.download_button("Download the spec", text, file_name=f"{exp}.yaml", key=f"bm_spec_{exp}",
                           icon=":material/download:", on_click="ignore")


def score_charts(scores: pd.DataFrame, colors: dict[str, str], key: str) -> None:
    for hib in (True, False):
        if (scores["higher_is_better"] == hib).any():
            st.plotly_chart(seed_scores_figure(scores, higher_is_better=hib, colors=colors),
                            width="stretch", key=f"{key}_scores_{hib}")
            st.caption(takeaways.scores(scores, hib))
    with st.expander("Scores table (every seed)"):
        st.dataframe(report.score_display(scores), hide_index=True, width="stretch",
                     column_config={c: SCORE for c in ("mean", "sd", "min", "max")})


def pooled_view(d: pd.DataFrame, title: str, colors: dict[str, str], key: str) -> None:
    """Forest plots (the benchmarks' own scores, then the sensitive NLL metrics) and the table."""
    if d.empty:
        st.info("No comparison yet: it needs both sides' evals of a benchmark to have finished.")
        return
    for primary, what in ((True, ""), (False, " — sensitive metrics (NLL, lower is better)")):
        part = d[d["primary"] == primary]
        if not part.empty:
            st.plotly_chart(pooled_deltas_figure(part, title + what, colors), width="stretch",
                            key=f"{key}_{primary}")
            st.caption(takeaways.deltas(part))
    st.dataframe(report.pooled_table(d), hide_index=True, width="stretch",
                 column_config={c: SCORE for c in ("delta", "CI low", "CI high", "seed sd")})


def drill_down(pooled: pd.DataFrame, res: pd.DataFrame, key: str) -> None:
    """Pick a comparison and a seed; list the items it flipped, with prompt, target and outputs."""
    st.subheader("Items that flipped")
    acc = pooled[pooled["primary"] & (pooled["metric"] == "acc")]
    if acc.empty:
        st.caption("No accuracy comparison to drill into yet.")
        return
    rows = acc.to_dict("records")
    i = st.selectbox("Comparison", range(len(rows)), key=f"{key}_cmp",
                     format_func=lambda j: f"{rows[j]['label']} vs {rows[j]['reference']} · "
                                           f"{rows[j]['benchmark']} [{rows[j]['matched']}]")
    pairs = ex.seed_pairs(rows[i], res)
    if not pairs:
        return
    k = st.selectbox("Seed", range(len(pairs)), key=f"{key}_seed",
                     format_func=lambda j: f"seed {pairs[j][1]['seed']}")
    ref, row = pairs[k]
    single = _compare_pair(ref["eval_id"], row["eval_id"])
    if not single.empty:
        st.dataframe(report.delta_table(single), hide_index=True, width="stretch",
                     column_config={"McNemar p": st.column_config.NumberColumn(format="%.3g")})
    items = _flipped(ref["eval_id"], row["eval_id"])
    if items.empty:
        st.caption("No item changed its outcome.")
        return
    for direction in ("right→wrong", "wrong→right"):
        part = items[items["direction"] == direction].rename(
            columns={"prediction_ref": f"{ref['label']} said", "prediction": f"{row['label']} said",
                     "output_ref": f"{ref['label']} wrote", "output": f"{row['label']} wrote"})
        st.markdown(f"**{direction}** ({len(part)} item{'' if len(part) == 1 else 's'})")
        if not part.empty:
            st.dataframe(part.drop(columns="direction"), hide_index=True, width="stretch",
                         column_config={"prompt": st.column_config.TextColumn(width="large")})


def report_download(kind: str, ident: str, key: str) -> None:
    """One click exports: the report is built section by section (progress with ETA) and saved
    under <data>/exports/; the browser download is then offered for the saved file."""
    from pathlib import Path
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
               "will not open the lab. Also from the command line: `python -m lab experiment report "
               "ID` or `python -m lab report ID`.")
    c1, c2 = st.columns(2)
    if exp:
        with c1:
            report_download("experiment", exp, f"{key}_exp_report")
    runs = store().list_runs()
    if exp:
        runs = runs[runs["experiment"] == exp]
    if runs.empty:
        return
    recs = {r["id"]: r for r in records(runs)}
    with c2:
        rid = st.selectbox("Run for a run report", list(recs), key=f"{key}_report_run",
                           format_func=lambda i: run_label(recs[i]))
        report_download("run", rid, f"{key}_run_report")


def experiment_view() -> None:
    exps = ex.experiments(store())
    if exps.empty:
        st.info("No experiment yet. Start one in the **Launch an experiment** tab (the quick CPU "
                "preset runs 28 small jobs on tiny-random), or look at individual evals.")
        return
    recs = {r["id"]: r for r in exps.to_dict("records")}
    ids = list(recs)
    wanted = st.query_params.get("experiment")
    exp = st.selectbox("Experiment", ids, index=ids.index(wanted) if wanted in ids else 0,
                       key="bm_experiment",
                       format_func=lambda i: f"{i} · {recs[i]['title'] or recs[i]['model'] or '?'}"
                                             + (f" · {int(recs[i]['active'])} active" if recs[i]["active"] else ""))
    design(exp)
    experiment_status(exp)
    res = ex.experiment_results(store(), exp)
    jobs = ex.experiment_runs(store(), exp)
    names = ex.titles(store(), exp)
    colors = arm_colors([*names, *jobs["arm"]])
    sig = tuple(res["eval_id"].unique()) if not res.empty else ()
    if not res.empty:
        st.subheader("The answer")
        done = tuple(jobs["status"])
        st.markdown("\n".join(f"- {line}" for line in _summary(exp, sig, done)))
    compute = ex.compute_table(store(), exp)
    if not compute.empty:
        st.subheader("Compute: what was matched")
        budget = compute["budget_flops"].max()
        st.caption(f"Every arm stopped at a budget of {budget:.3g} training FLOPs per run (NTP's cost "
                   "of the budget steps); costlier objectives take fewer steps. '@ steps of X' rows "
                   "below are NTP's checkpoint at X's step count, same seed: the matched-steps "
                   "comparison." if budget else "Every run did the same number of steps; their FLOPs differ.")
        st.dataframe(compute[["arm", "seed", "objective", "status", "steps", "flops", "budget_flops",
                              "budget_share", "flops_per_step", "run_id"]], hide_index=True, width="stretch",
                     column_config={"flops": st.column_config.NumberColumn("FLOPs", format="%.3e"),
                                    "budget_flops": st.column_config.NumberColumn("budget (FLOPs)", format="%.3e"),
                                    "flops_per_step": st.column_config.NumberColumn("FLOPs per step", format="%.3e"),
                                    "budget_share": st.column_config.NumberColumn("share of budget",
                                                                                  format="%.2f")})
    if res.empty:
        st.info("No evaluation of this experiment has finished yet: results appear here as the "
                "eval jobs end.")
        export_buttons(exp, "bm")
        return
    st.subheader("Scores")
    score_charts(xr.score_table(res), colors, "bm")

    st.subheader("Deltas, pooled over seeds")
    against = st.radio("Compared with", ["reference", "base"], horizontal=True, key="bm_against",
                       format_func={"reference": "the reference arm (NTP; same FLOPs, and same steps)",
                                    "base": "the base model"}.get)
    d = _pooled(exp, against, sig)
    pooled_view(d, f"Deltas vs {'NTP' if against == 'reference' else 'the base model'} (95 % CI over "
                   "items and seeds)", colors, "bm_deltas")
    st.caption("Per seed: each seed's delta against the same seed of the reference. 'larger than the "
               "seed-to-seed spread' needs the interval to exclude 0 and |delta| to exceed the sd "
               "of the per-seed deltas (docs/evaluation.md).")

    thought = _thought_deltas(exp, sig)
    if not thought.empty:
        st.subheader("Quiet-STaR: no thoughts vs thoughts vs corrupted thoughts")
        st.caption("The same checkpoints scored without thoughts, with their own thoughts, and with "
                   "thoughts replaced by random tokens of the same length (objectives.md §5). "
                   "Corrupted ≈ real means the thoughts act as scaffolding, not reasoning.")
        pooled_view(thought, "Thought modes, pooled over seeds", colors, "bm_thought")

    train = jobs[(jobs["kind"] == "train") & (jobs["arm"] != "base")]     # the arms, not the pretraining
    if not train.empty:
        st.subheader("Training curves")
        metrics = store().metrics(train["id"].tolist(), [m for m, _ in CURVES])
        shown = [(m, t) for m, t in CURVES if (metrics["name"] == m).any()]
        cols = st.columns(2)
        run_arm = dict(zip(train["id"], train["arm"]))
        for i, (m, t) in enumerate(shown):
            cols[i % 2].plotly_chart(band_curves_figure(metrics, m, run_arm, names, x="flops", title=t,
                                                        colors=colors),
                                     width="stretch", key=f"bm_curve_{m}")
            cols[i % 2].caption(takeaways.curve(metrics, m, run_arm, names, t))
    drill_down(pd.concat([d, thought], ignore_index=True), res, "bm")
    export_buttons(exp, "bm")


def comparable_pair(evs: pd.DataFrame) -> list[str]:
    """The newest eval and the newest other eval of the same benchmark and item count (evs is
    newest first); just the newest eval when none matches."""
    if evs.empty:
        return []
    first = evs.iloc[0]
    same = evs[(evs["benchmark"] == first["benchmark"]) & (evs["n_items"] == first["n_items"])
               & (evs["id"] != first["id"])]
    return [first["id"]] + same["id"].head(1).tolist()


def evals_view() -> None:
    evs = xr.all_evals(store())
    if evs.empty:
        st.info("No evals yet: run one in the **Run one evaluation** tab.")
        return
    labels = {r["id"]: f"{r['model']} · {r['benchmark']}"
                       + ("" if r["thought_mode"] == "none" else f" · {r['thought_mode']}")
                       + f" · {r['score']:.3f} (n={r['n_items']}) · {r['id']}" for r in evs.to_dict("records")}
    st.caption("By default the two newest evals of the same benchmark on the same number of items: "
               "a delta means something only between scores of the same items.")
    chosen = st.multiselect("Evals", list(labels), default=comparable_pair(evs), format_func=labels.get,
                            key="bm_evals")
    res = ex.results_for_evals(store(), chosen)
    if res.empty:
        return
    prim = res[res["primary"]]
    st.dataframe(prim[["eval_id", "model", "benchmark", "thought_mode", "score", "stderr", "n",
                       "checkpoint_step"]], hide_index=True, width="stretch",
                 column_config={"score": SCORE, "stderr": SCORE})
    if len(chosen) >= 2:
        c1, c2 = st.columns(2)
        a = c1.selectbox("Reference (A)", chosen, format_func=labels.get, key="bm_ev_a")
        b = c2.selectbox("Compared (B)", chosen, index=1, format_func=labels.get, key="bm_ev_b")
        ea, eb = evs.set_index("id").loc[a], evs.set_index("id").loc[b]
        if a != b and ea["benchmark"] != eb["benchmark"]:
            st.warning(f"A is {ea['benchmark']} and B is {eb['benchmark']}: scores of different "
                       "benchmarks are not compared.")
        elif a != b:
            if ea["n_items"] != eb["n_items"]:
                st.info(f"A scored {ea['n_items']} items and B {eb['n_items']}: the delta below uses "
                        "only the items both scored.")
            d = _compare_pair(a, b)
            if d.empty:
                st.warning("These two evals share no items (different benchmarks, data or limits).")
            else:
                st.plotly_chart(report.deltas_figure(d, "B − A"), width="stretch", key="ev_delta")
                st.dataframe(report.delta_table(d), hide_index=True, width="stretch")
                items = _flipped(a, b)
                if not items.empty:
                    st.markdown("**Items that flipped**")
                    st.dataframe(items, hide_index=True, width="stretch")
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
    run_recs = checkpoint_runs(include_active=True)    # a running run is evaluated once it finishes
    c1, c2 = st.columns(2)
    with c1:
        source = st.radio("Model", ["Preset", "Checkpoint of a run", "Folder or hub id"], horizontal=True,
                          key="ev_source")
        if source == "Preset":
            model = st.selectbox("Model preset", list(MODEL_PRESETS), key="ev_preset")
        elif source == "Checkpoint of a run":
            rid = st.selectbox("Run", list(run_recs), key="ev_run",
                               format_func=lambda i: checkpoint_label(run_recs[i])) if run_recs else None
            if not run_recs:
                st.info("No run has a checkpoint yet (nor is one training).")
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
        precision = st.selectbox("Precision", EVAL_PRECISIONS, key="ev_precision",
                                 format_func={"no": "fp32 (comparable with lm-eval)", "bf16": "bf16 autocast (faster)",
                                              "auto": "auto (bf16 where native)"}.get,
                                 help="Scores of different precisions differ by themselves: the lab "
                                      "refuses to compare them.")
        exps = ex.experiments(store())["id"].tolist()
        experiment = st.selectbox("Add to experiment", [""] + exps, key="ev_experiment",
                                  format_func=lambda e: e or "(none)")
    if st.button("Queue evaluation", type="primary", key="ev_submit"):
        rid = run_id_of(model)
        spec = EvalSpec(model=model, benchmark=benchmark, data=data, limit=int(limit),
                        max_new_tokens=int(max_new), thought_mode=thought_mode, run_id=rid, precision=precision)
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
