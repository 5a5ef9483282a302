"""The Benchmarks page's experiment launcher: a form that builds an experiment spec (the same
YAML `python -m lab experiment run` takes), shows it with the equivalent command and a
download, and launches it. Launching returns at once: the experiment's driver does the slow
checks and starts the jobs in the background."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import streamlit as st
import yaml

from lab import experiments as ex
from lab.errors import LabError
from lab.evaluation import BENCHMARKS
from lab.models import PRESETS as MODEL_PRESETS
from lab.objectives import available
from pages.common import data_dir

BASIC = ("model", "corpus", "title")


def _preset_to_state() -> None:
    """Fill every widget of the form from the chosen preset (reset what it leaves out)."""
    spec = ex.load_preset(st.session_state["xp_preset"])
    ss = st.session_state
    for k in BASIC:
        ss[f"xp_{k}"] = getattr(spec, k)
    ss["xp_pretrain"] = spec.pretrain.steps
    ss["xp_budget_steps"] = spec.branch.budget_steps
    ss["xp_budget_mode"] = spec.branch.budget_mode
    ss["xp_arms_all"] = [_arm_dict(a) for a in spec.arms] + [
        {"id": o, "objective": o} for o in available() if o not in {a.id for a in spec.arms}] + [
        _arm_dict(a) for a in ex.ARM_CHOICES                  # issue 12's arms
        if a.id not in {a.id for a in spec.arms} and a.objective in available()]
    ss["xp_arms"] = [a.id for a in spec.arms]
    ss["xp_seeds"] = len(spec.seeds)
    ss["xp_benchmarks"] = list(spec.evaluation.benchmarks)
    ss["xp_limit"] = spec.evaluation.limit
    ss["xp_max_new_tokens"] = spec.evaluation.max_new_tokens
    for fam in ("gsm8k", "csqa"):
        ss[f"xp_data_{fam}"] = spec.evaluation.data.get(fam) or _default_data(fam)
    ss["xp_thought_modes"] = spec.controls.thought_modes
    ss["xp_cot"] = spec.controls.cot
    ss["xp_matched_steps"] = spec.controls.matched_steps
    ss["xp_training"] = json.dumps(spec.training)
    ss["xp_params"] = json.dumps({a["id"]: a.get("params") or {} for a in ss["xp_arms_all"]})
    ss["xp_base_spec"] = spec.to_dict()


def _arm_dict(arm: ex.Arm) -> dict:
    return {k: v for k, v in dataclasses.asdict(arm).items() if v not in (None, {}, [], "")}


def _default_data(family: str) -> str:
    path = ex.DEFAULT_DATA.get(family)
    return str(path) if path is not None and Path(path).exists() else ""


def spec_from_form() -> ex.ExperimentSpec:
    """The spec the widgets describe (LabError when a JSON box or a setting is malformed)."""
    ss = st.session_state
    try:
        training = json.loads(ss["xp_training"] or "{}")
        params = json.loads(ss["xp_params"] or "{}")
    except json.JSONDecodeError as e:
        raise LabError(f"The JSON settings are not valid JSON: {e}") from e
    if not isinstance(training, dict) or not isinstance(params, dict):
        raise LabError("Training settings and objective settings must be JSON objects ({...}).")
    arms = []
    for arm in ss["xp_arms_all"]:
        if arm["id"] in ss["xp_arms"]:
            arms.append({**arm, "params": params.get(arm["id"], arm.get("params") or {})})
    benches = list(ss["xp_benchmarks"])
    families = {BENCHMARKS[b].data for b in benches if b in BENCHMARKS}
    if ss["xp_cot"]:
        families.add("gsm8k")
    data = {fam: ss[f"xp_data_{fam}"].strip() for fam in ("gsm8k", "csqa")
            if fam in families and ss[f"xp_data_{fam}"].strip()}
    return ex.ExperimentSpec.from_dict({
        "title": ss["xp_title"].strip(), "model": ss["xp_model"].strip(),
        "corpus": ss["xp_corpus"].strip() or "builtin", "training": training,
        "pretrain": {"steps": int(ss["xp_pretrain"]), **_pretrain_extra()},
        "branch": {"budget_mode": ss["xp_budget_mode"], "budget_steps": int(ss["xp_budget_steps"])},
        "arms": arms, "seeds": int(ss["xp_seeds"]),
        "evaluation": {**ss["xp_base_spec"]["evaluation"], "benchmarks": benches,
                       "limit": int(ss["xp_limit"]), "max_new_tokens": int(ss["xp_max_new_tokens"]),
                       "limits": {b: v for b, v in ss["xp_base_spec"]["evaluation"]["limits"].items()
                                  if b in benches}, "data": data},
        "controls": {"thought_modes": bool(ss["xp_thought_modes"]), "cot": bool(ss["xp_cot"]),
                     "matched_steps": bool(ss["xp_matched_steps"])}})


def _pretrain_extra() -> dict:
    """The preset's pretraining settings other than the step count (kept as they are)."""
    base = st.session_state["xp_base_spec"]["pretrain"]
    return {k: v for k, v in base.items() if k != "steps"}


def experiment_form() -> None:
    launched = st.session_state.get("xp_launched")
    if launched:
        st.success(f"Started experiment {launched}: its progress and results are under **Results**.")
    st.caption("Trains every chosen arm, with every seed, on the same model and corpus at the same "
               "budget (optionally after a shared NTP pretraining), then evaluates each checkpoint, "
               "the base model and the controls on the same items. The form builds an experiment "
               "spec: the same YAML file `python -m lab experiment run` takes.")
    ids = list(ex.presets())
    if "xp_preset" not in st.session_state:
        st.session_state["xp_preset"] = ids[0] if "quick-cpu" not in ids else "quick-cpu"
        _preset_to_state()
    titles = {p: ex.load_preset(p).title for p in ids}
    st.selectbox("Preset", ids, key="xp_preset", on_change=_preset_to_state,
                 format_func=lambda p: f"{titles[p]}  ({p})")
    c1, c2 = st.columns(2)
    with c1:
        st.text_input("Model (preset, folder, hub id or run:ID)", key="xp_model",
                      help="Presets: " + ", ".join(MODEL_PRESETS))
        st.text_input("Corpus (builtin, a .txt/.jsonl/.parquet path, or hf:NAME)", key="xp_corpus")
        st.number_input("Pretraining (NTP steps; 0 = none)", 0, 1_000_000, key="xp_pretrain",
                        help="One shared NTP run; every arm and seed then continues from its checkpoint.")
        arms = st.session_state["xp_arms_all"]
        st.multiselect("Arms", [a["id"] for a in arms], key="xp_arms",
                       format_func=lambda i: next(f"{a.get('title') or i} ({a['objective']})" for a in arms
                                                  if a["id"] == i))
        st.number_input("Seeds per arm", 1, 20, key="xp_seeds")
        st.number_input("Budget (NTP steps)", 1, 1_000_000, key="xp_budget_steps")
        st.radio("Match", ex.BUDGET_MODES, horizontal=True, key="xp_budget_mode",
                 format_func={"flops": "training FLOPs (budget = that many NTP steps)",
                              "steps": "optimizer steps"}.get)
    with c2:
        st.multiselect("Benchmarks", list(BENCHMARKS), key="xp_benchmarks")
        for fam in ("gsm8k", "csqa"):
            st.text_input(f"{fam} data file", key=f"xp_data_{fam}")
        st.number_input("Items per benchmark (0 = all)", 0, 100_000, key="xp_limit",
                        help="1,000 items keep a 95 % interval on accuracy to about ±3 points.")
        st.number_input("Max new tokens (0 = benchmark default)", 0, 4096, key="xp_max_new_tokens")
        st.checkbox("Quiet-STaR arms also with their thoughts and with corrupted thoughts",
                    key="xp_thought_modes")
        st.checkbox("Base model with and without chain of thought (needs GSM8K)", key="xp_cot")
        st.checkbox("Also compare with NTP at matched steps", key="xp_matched_steps",
                    disabled=st.session_state["xp_budget_mode"] != "flops",
                    help="At a FLOP budget a costlier arm takes fewer steps. NTP then starts after "
                         "the other arms of its seed, keeps a checkpoint at each one's step count, "
                         "and those checkpoints are evaluated too.")
    with st.expander("Training settings and objective settings (JSON)"):
        st.text_area("Training settings shared by every run (RunConfig fields)", key="xp_training", height=80)
        st.text_area("Objective settings per arm ({arm id: {setting: value}})", key="xp_params", height=80)
    st.text_input("Title (optional)", key="xp_title")
    try:
        spec = spec_from_form()
    except LabError as e:
        st.error(str(e))
        return
    text = spec.to_yaml()
    unchanged = spec.to_dict() == ex.load_preset(st.session_state["xp_preset"]).to_dict()
    command = (f"python -m lab experiment run --preset {st.session_state['xp_preset']}" if unchanged
               else "python -m lab experiment run experiment.yaml")
    with st.expander("The spec (YAML) and the equivalent command"):
        st.code(command, language="bash")
        st.code(text, language="yaml")
        st.download_button("Download the spec", text, file_name="experiment.yaml", mime="application/x-yaml",
                           icon=":material/download:", key="xp_download", on_click="ignore")
    if st.button("Launch experiment", type="primary", key="xp_launch"):
        launch(spec, command)
    uploaded = st.file_uploader("…or launch a spec file", type=["yaml", "yml"], key="xp_upload")
    if uploaded is not None and st.button("Launch the uploaded spec", key="xp_launch_upload"):
        try:
            data = yaml.safe_load(uploaded.getvalue().decode("utf-8"))
            launch(ex.ExperimentSpec.from_dict(data, source=uploaded.name),
                   f"python -m lab experiment run {uploaded.name}")
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            st.error(f"{uploaded.name} is not a YAML file: {e}")
        except LabError as e:
            st.error(str(e))


def launch(spec: ex.ExperimentSpec, command: str) -> None:
    """Launch (fast checks only; the rest runs in the background) and show the new experiment
    under Results at once."""
    try:
        exp = ex.launch(spec, data_dir(), command=command)
    except LabError as e:
        st.error(str(e))
        return
    st.query_params["experiment"] = exp
    st.session_state.pop("bm_experiment", None)
    st.session_state["xp_launched"] = exp
    st.rerun()
