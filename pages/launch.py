"""Launch: pick objective, model, corpus and settings; validate; start a background job."""
from __future__ import annotations

import dataclasses
import shutil

import streamlit as st

from jobs.manager import cli_command, gpu_count, submit, validate
from lab.config import PRESETS, RunConfig, preset_title, settings_help
from lab.corpora import save_upload
from lab.errors import LabError
from lab.trackers import TRACKERS
from lab.models import PRESETS as MODEL_PRESETS
from lab.objectives import REGISTRY, get_objective
from pages.common import data_dir, read_only, read_only_banner, store

st.title("Launch a training run")
st.caption("Every run is a background job: it keeps going if you close the page or the server restarts.")
read_only_banner()

D = RunConfig()
HELP = settings_help(RunConfig)          # tooltips: the same text as `--help` and the README
# Form label, and widget options, of each numeric setting; HELP decides which sit behind
# the "Advanced" fold.
LABELS = {"max_steps": ("Steps", dict(min_value=1, step=10)), "batch_size": ("Batch size", dict(min_value=1)),
          "seq_len": ("Sequence length", dict(min_value=8, step=32)),
          "lr": ("Learning rate", dict(min_value=0.0, format="%.2e")),
          "warmup_steps": ("Warmup steps", dict(min_value=0)),
          "rho": ("Forking-token share ρ (1 = all tokens)", dict(min_value=0.01, max_value=1.0, step=0.05)),
          "sample_every": ("Record samples every N steps", dict(min_value=1)),
          "checkpoint_every": ("Checkpoint every N steps (0 = end only)", dict(min_value=0)),
          "corpus_docs": ("Built-in problems / max documents", dict(min_value=0)),
          "seed": ("Seed", dict(min_value=0)),
          "grad_accum": ("Gradient accumulation", dict(min_value=1)),
          "grad_clip": ("Grad clip (0 = off)", dict(min_value=0.0)),
          "weight_decay": ("Weight decay", dict(min_value=0.0)),
          "n_samples": ("Samples recorded", dict(min_value=0)),
          "log_every": ("Log a line every N steps", dict(min_value=1))}
FIELDS = list(LABELS)
for f in FIELDS + ["model_choice"]:
    st.session_state.setdefault(f"f_{f}", getattr(D, f, None) if f != "model_choice" else D.model)


def apply_preset() -> None:
    """Fill the form from a preset. Settings the preset leaves out go back to their defaults,
    so nothing is left over from a preset picked before (the CLI's --preset does the same)."""
    values = {**D.to_dict(), **PRESETS.get(st.session_state["preset"], {})}
    for k in FIELDS:
        st.session_state[f"f_{k}"] = values[k]
    st.session_state["f_model_source"] = "Preset"
    st.session_state["f_model_choice"] = values["model"]
    st.session_state["f_objective"] = values["objective"]
    st.session_state["f_num_processes"] = values["num_processes"]
    st.session_state["f_fsdp"] = values["fsdp"]
    st.session_state["f_executor"] = values["executor"]
    st.session_state["f_report_to"] = [t for t in values["report_to"] if t in TRACKERS]
    gpus = gpu_count()
    st.session_state["f_device"] = values["device"] if values["device"] != "gpu" or gpus else "auto"
    st.session_state["f_precision"] = (values["mixed_precision"]
                                       if values["mixed_precision"] != "fp16" or gpus else "auto")
    try:
        defaults = get_objective(values["objective"]).Params()
    except LabError:
        return
    params = {**dataclasses.asdict(defaults), **values.get("params", {})}
    for k, v in params.items():
        st.session_state[f"p_{values['objective']}_{k}"] = v if v is not None else ""


def _param_inputs(objective: str, helps: dict, params: dict) -> None:
    """One input per objective setting, labelled by name with its help as the tooltip."""
    for name, h in helps.items():
        default, key, tip = h["default"], f"p_{objective}_{name}", h["help"] or None
        st.session_state.setdefault(key, default if default is not None else "")
        if isinstance(default, bool):
            params[name] = st.checkbox(name, key=key, help=tip)
        elif isinstance(default, int):
            params[name] = st.number_input(name, step=1, key=key, help=tip)
        elif isinstance(default, float):
            params[name] = st.number_input(name, format="%g", key=key, help=tip)
        elif isinstance(default, str) or default is None:
            params[name] = st.text_input(name, key=key, help=tip)


st.selectbox("Preset", ["(custom)"] + list(PRESETS), key="preset", on_change=apply_preset,
             format_func=lambda k: k if k == "(custom)" else f"{preset_title(k)} · {k}",
             help="Fills the form with tested settings; you can still change any value. The id after "
                  "the dot is what `--preset` takes on the command line.")

c1, c2 = st.columns(2)
with c1:
    st.subheader("What to train")
    objective = st.selectbox("Objective", list(REGISTRY), key="f_objective",
                             format_func=lambda n: {"ntp": "NTP (baseline)", "quiet-star": "Quiet-STaR",
                                                    "rlp": "RLP", "rpt": "RPT"}.get(n, n))
    try:
        obj_cls = get_objective(objective)
        st.caption(obj_cls.description)
    except LabError as e:
        obj_cls = None
        st.error(str(e))
    source = st.radio("Model", ["Preset", "Folder or hub id", "Checkpoint of a run"], horizontal=True,
                      key="f_model_source")
    if source == "Preset":
        model = st.selectbox("Model preset", list(MODEL_PRESETS), key="f_model_choice",
                             help="smollm2-135m: SmolLM2-135M-Instruct, offline. tiny-random: a 3 M "
                                  "parameter random Llama for instant demos.")
    elif source == "Folder or hub id":
        model = st.text_input("Model folder or Hugging Face id", key="f_model_text",
                              placeholder="/path/to/model or HuggingFaceTB/SmolLM2-360M")
    else:
        runs = store().list_runs()
        ids = runs["id"].tolist()
        model = "run:" + st.selectbox("Run", ids, key="f_model_run") if ids else ""
        if not ids:
            st.info("No runs yet.")
    trust = st.checkbox("trust_remote_code (run the model's own Python code)", key="f_trust",
                        help="Off by default: only turn it on for models whose authors you trust.")

    corpus_kind = st.radio("Corpus", ["Built-in math problems", "Upload a file", "Path on the server",
                                      "Hugging Face dataset"], horizontal=True, key="f_corpus_kind")
    text_field = D.text_field
    if corpus_kind == "Built-in math problems":
        corpus = "builtin"
    elif corpus_kind == "Upload a file":
        up = st.file_uploader("A .txt (blank lines separate documents), .jsonl or .parquet file",
                              type=["txt", "jsonl", "parquet"], key="f_upload", disabled=read_only())
        corpus = ""
        if up is not None:
            try:
                corpus = str(save_upload(data_dir(), up.name, up.getvalue()))
                st.caption(f"Stored as `{corpus}`")
            except LabError as e:
                st.error(str(e))
    elif corpus_kind == "Path on the server":
        corpus = st.text_input("Corpus file path", key="f_corpus_path")
    else:
        corpus = "hf:" + st.text_input("Dataset name (needs a network)", key="f_corpus_hf")
    if corpus_kind != "Built-in math problems":
        text_field = st.text_input("Text field / column", value=D.text_field, key="f_text_field")

with c2:
    st.subheader("Settings")
    basic = [f for f in FIELDS if not HELP[f]["advanced"]]
    cols = st.columns(2)
    for i, f in enumerate(basic):
        label, opts = LABELS[f]
        cols[i % 2].number_input(label, key=f"f_{f}", help=HELP[f]["help"], **opts)
    n_gpu = gpu_count()
    device = st.selectbox("Device", ["auto", "cpu", "gpu"] if n_gpu else ["auto", "cpu"], key="f_device",
                          help=HELP["device"]["help"])
    executor = st.selectbox("Run on", ["local", "slurm"] if shutil.which("sbatch") else ["local"],
                            key="f_executor", format_func={"local": "this machine's queue",
                                                           "slurm": "Slurm (sbatch)"}.get,
                            help=HELP["executor"]["help"] + " Slurm appears when its `sbatch` is on "
                                 "this machine's PATH.")
    num_gpus = 1
    with st.expander("Advanced settings"):
        cols = st.columns(2)
        for i, f in enumerate(f for f in FIELDS if HELP[f]["advanced"]):
            label, opts = LABELS[f]
            cols[i % 2].number_input(label, key=f"f_{f}", help=HELP[f]["help"], **opts)
        precision = st.selectbox("Mixed precision", ["auto", "bf16", "no"] + (["fp16"] if n_gpu else []),
                                 key="f_precision", help=HELP["mixed_precision"]["help"])
        if n_gpu:
            num_gpus = st.number_input("GPUs for this job", 1, n_gpu, 1, key="f_num_gpus",
                                       help=HELP["num_gpus"]["help"])
        num_processes = st.number_input("Processes (data parallel)", 1, 256, 1, key="f_num_processes",
                                        help=HELP["num_processes"]["help"])
        fsdp = st.checkbox("FSDP: shard the model over the GPUs", key="f_fsdp", disabled=not n_gpu,
                           help=HELP["fsdp"]["help"])
        report_to = st.multiselect("Also report to", list(TRACKERS), key="f_report_to",
                                   help=HELP["report_to"]["help"])
    params = {}
    if obj_cls is not None and dataclasses.fields(obj_cls.Params):
        phelp = settings_help(obj_cls.Params)
        with st.expander(f"{objective} settings", expanded=True):
            _param_inputs(objective, {k: h for k, h in phelp.items() if not h["advanced"]}, params)
        advanced = {k: h for k, h in phelp.items() if h["advanced"]}
        if advanced:
            with st.expander(f"Advanced {objective} settings"):
                _param_inputs(objective, advanced, params)

name = st.text_input("Run name (optional)", key="f_name")
ss = st.session_state
values = {f: ss[f"f_{f}"] for f in FIELDS}
values.update(objective=objective, model=(model or "").strip(), corpus=(corpus or "").strip(),
              text_field=text_field, name=name, device=device, mixed_precision=precision,
              num_gpus=int(num_gpus), num_processes=int(num_processes), fsdp=bool(fsdp), executor=executor, report_to=list(report_to),
              trust_remote_code=trust, params=params)

try:
    cfg = RunConfig.from_dict(values)
    st.markdown("**Equivalent command**")
    st.code(cli_command(cfg, data_dir()), language="bash")
except LabError as e:
    cfg = None
    st.error(str(e))

col_a, col_b, _ = st.columns([1, 1, 4])
check = col_a.button("Check settings", width="stretch")
launch = col_b.button("Launch", type="primary", width="stretch", disabled=cfg is None or read_only())
if cfg is not None and (check or launch):
    try:
        with st.spinner("Checking model, corpus and settings…"):
            validate(cfg, data_dir())
        if launch:
            run_id = submit(cfg, data_dir())
            st.success(f"Started run **{run_id}**. Follow it on the Runs page.")
            st.page_link("pages/runs.py", label="Open Runs →", icon=":material/monitoring:")
            st.session_state["last_run"] = run_id
        else:
            st.success("Settings look good.")
    except LabError as e:
        st.error(str(e))

if cfg is not None:
    with st.expander("Several machines (accelerate launch lines and a Slurm script)"):
        st.caption("Creates the run in this data folder, which every machine must share, and shows "
                   "the command each machine runs. Nothing starts here.")
        m1, m2, m3 = st.columns(3)
        machines = m1.number_input("Machines", 2, 1024, 2, key="f_num_machines")
        main_ip = m2.text_input("Address of machine 0", "127.0.0.1", key="f_main_ip")
        port = m3.number_input("Port", 1, 65535, 29500, key="f_main_port")
        if st.button("Create the run and show its launch commands", disabled=read_only()):
            from jobs.multinode import export_multinode
            try:
                exported = export_multinode(cfg, data_dir(), machines=int(machines), main_ip=main_ip,
                                            port=int(port))
                st.code(exported.text(), language="bash")
            except LabError as e:
                st.error(str(e))
