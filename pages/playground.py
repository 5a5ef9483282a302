"""Playground: poke any model (preset, folder / hub id, run checkpoint) with your own text, token
by token: entropy and forking tokens, probability of the true token, Quiet-STaR thoughts for
a Quiet-STaR checkpoint, RLP thoughts or RPT rollouts at a chosen position with their rewards,
and a second model side by side. All numbers come from lab/playground.py."""
from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from lab import playground as pg
from lab.errors import LabError
from lab.models import PRESETS
from pages.common import checkpoint_label, checkpoint_runs, data_dir, token_html, windowed

EXAMPLE = ("Tom has 3 apples and buys 4 more apples at the market. How many apples does he have "
           "now? He has 3 + 4 = 7 apples.")
SOURCES = ["Preset", "Checkpoint of a run", "Folder, hub id or run:ID"]
ROOT = Path(__file__).resolve().parent.parent      # item files default to ../shared/data from here

st.title("Playground")
st.caption("Type any text and see, token by token, how uncertain the model was (entropy; the top "
           "20 % are the forking tokens), how likely it found the true token, and what thoughts "
           "at a position would earn under RLP and RPT.")


# ---- cached model and computations (keyed by the resolved spec, so a new checkpoint reloads) ----

@st.cache_resource(max_entries=3, show_spinner=False)
def _model(spec: str, data: str) -> pg.PlayModel:
    return pg.load(spec, data)


@st.cache_data(max_entries=64, show_spinner=False)
def _tokens(spec: str, data: str, text: str):
    return pg.token_table(_model(spec, data), text)


@st.cache_data(max_entries=32, show_spinner=False)
def _quiet_star(spec: str, data: str, text: str, **kw):
    return pg.thought_table(_model(spec, data), text, **kw)


@st.cache_data(max_entries=8, show_spinner=False)
def _items(path: str) -> list[tuple[str, str]]:
    return pg.read_items(path)


@st.cache_data(max_entries=32, show_spinner=False)
def _sample(kind: str, spec: str, data: str, text: str, position: int, **kw) -> pg.Sampled:
    fn = pg.rlp_thoughts if kind == "rlp" else pg.rpt_rollouts
    return fn(_model(spec, data), text, position, **kw)


# ---- inputs ---------------------------------------------------------------------------------

def model_picker(slot: str, default: str) -> str:
    """A model spec from a preset, a run checkpoint, or free text ("" when nothing is chosen).
    `default` is a preset, `run:ID` or any other spec."""
    runs = checkpoint_runs()                    # only runs with a checkpoint to load
    labels = {i: checkpoint_label(r) for i, r in runs.items()}
    default_run = default[4:].split("@")[0] if default.startswith("run:") else None
    start = 0 if default in PRESETS else 1 if default_run in labels else 2
    source = st.radio("Source", SOURCES, horizontal=True, key=f"pg_{slot}_src", index=start)
    if source == SOURCES[0]:
        return st.selectbox("Preset", PRESETS, key=f"pg_{slot}_preset",
                            index=PRESETS.index(default) if default in PRESETS else 0,
                            help="smollm2-135m: SmolLM2-135M-Instruct. tiny-random: a 3 M parameter "
                                 "random Llama (instant, meaningless numbers).")
    if source == SOURCES[1]:
        ids = list(labels)
        run_id = st.selectbox("Run", ids, key=f"pg_{slot}_run", format_func=labels.get,
                              index=ids.index(default_run) if default_run in ids else 0)
        if run_id is None:
            st.info("No run has a checkpoint yet. Launch one on the **Launch** page.")
            return ""
        steps = runs[run_id]["checkpoint_steps"]
        if len(steps) > 1:
            step = st.selectbox("Checkpoint step", ["latest"] + steps[::-1], key=f"pg_{slot}_step")
            return f"run:{run_id}" + ("" if step == "latest" else f"@{step}")
        return f"run:{run_id}"
    return st.text_input("Model", value="" if start < 2 else default, key=f"pg_{slot}_text",
                         placeholder="/path/to/model · HuggingFaceTB/SmolLM2-360M · run:<id>[@step]")


def analyse(spec: str, text: str, slot: str):
    """(resolved spec, PlayModel, token table) or None after showing the error."""
    try:
        resolved = pg.resolve_spec(spec, data_dir())
        with st.spinner(f"Reading the text with {resolved} (a model loads once)…"):
            return resolved, _model(resolved, data_dir()), _tokens(resolved, data_dir(), text)
    except LabError as e:
        st.error(f"Model {slot}: {e}")
        return None


def load_item() -> None:
    items = st.session_state.get("pg_items") or []
    chosen = st.session_state.get("pg_item")
    text = dict(items).get(chosen)
    if text:
        st.session_state["pg_text"] = text


c1, c2 = st.columns(2)
with c1:
    st.markdown("**Model A**")
    spec_a = model_picker("a", st.query_params.get("model", "smollm2-135m"))
with c2:
    both = st.toggle("Compare with a second model (B)", key="pg_compare",
                     help="Typically the base model as A and a trained checkpoint as B.")
    default_b = st.query_params.get("model_b") or next((f"run:{r}" for r in checkpoint_runs()), "tiny-random")
    spec_b = model_picker("b", default_b) if both else None

with st.expander("Take the text from a GSM8K or CommonsenseQA item"):
    files = {name: str(p) for name, p in pg.default_item_files(ROOT).items()}
    choice = st.radio("File", list(files) + ["Other path"], horizontal=True, key="pg_file")
    path = files.get(choice) or st.text_input("Path to a GSM8K or CommonsenseQA .jsonl file",
                                              key="pg_file_path")
    if path:
        try:
            st.session_state["pg_items"] = _items(path)
            st.selectbox("Item", [label for label, _ in st.session_state["pg_items"]], index=None,
                         key="pg_item", on_change=load_item, placeholder="Pick an item: it replaces the text")
        except LabError as e:
            st.error(str(e))

st.session_state.setdefault("pg_text", EXAMPLE)
text = st.text_area("Text", key="pg_text", height=110,
                    help=f"Up to {pg.MAX_TOKENS} tokens are read; press Ctrl+Enter to apply.")

c = st.columns([1, 1, 1, 1, 1])
temperature = c[0].slider("Thought temperature", 0.0, 2.0, 0.7, 0.05, key="pg_temp",
                          help="0 = greedy. Applies to Quiet-STaR, RLP and RPT sampling.")
n_thoughts = c[1].number_input("Thoughts per position (G)", 1, 16, 2, key="pg_g",
                               help="Quiet-STaR thoughts per token, RLP thoughts or RPT rollouts at a "
                                    "position. Cost grows with G: Quiet-STaR on 100 SmolLM2 tokens "
                                    "takes about 3 s per thought.")
seed = c[2].number_input("Seed", 0, 2**31 - 1, 0, key="pg_seed", help="Same seed → same thoughts.")
max_new = c[3].number_input("Max thought tokens", 1, 256, 32, key="pg_max_new")
corrupted = c[4].toggle("Corrupt thoughts", key="pg_corrupt",
                        help="Control (objectives.md §5): replace each thought by random tokens of "
                             "the same length. If rewards stay the same, the thoughts are scaffolding.")

if not text.strip():
    st.info("Type or paste some text above.")
    st.stop()


def signed_delta(x: float, digits: int = 4) -> str | None:
    """A metric delta, or None when it rounds to zero (no red "↓ -0.0000")."""
    return None if round(float(x), digits) == 0 else f"{float(x):+.{digits}f}"


# ---- per-token views ------------------------------------------------------------------------

def token_view(toks, window) -> None:
    """The Forking-tokens view of one model's table: metrics and coloured tokens."""
    s = pg.summary(toks)
    m = st.columns(4)
    m[0].metric("Tokens", int(s["tokens"]))
    m[1].metric("Mean entropy", f"{s['mean_entropy']:.3f}", help="nats, over the full vocabulary")
    m[2].metric("Mean NLL", f"{s['mean_nll']:.3f}", help="nats: −log p of the true token")
    m[3].metric("Top-1 hits", f"{s['top1']:.0%}", help="share of tokens that were the model's top guess")
    shown = toks[toks["position"].isin(window)]
    st.markdown(token_html(shown, colour, mark_col="forking",
                           selected=st.session_state.get("pg_pos"),
                           tooltip_cols=("entropy", "prob", "nll", "top_prob")),
                unsafe_allow_html=True)


def thoughts_view(resolved: str, pm: pg.PlayModel, toks, window, slot: str):
    """Quiet-STaR per-token thoughts (only for a checkpoint with a mixing head)."""
    if pm.head is None:
        return None
    kw = dict(n_thoughts=int(n_thoughts), temperature=float(temperature), seed=int(seed),
              corrupted=bool(corrupted))
    try:
        with st.spinner("Thinking after every token (Quiet-STaR)…"):
            qs = _quiet_star(resolved, data_dir(), text, **kw)
    except LabError as e:
        st.error(str(e))
        return None
    view = toks.merge(qs.drop(columns=["thoughts"]), on="position", how="left")
    view["help"] = view["logp_gain"].clip(lower=0)
    st.markdown(f"**Quiet-STaR ({slot})**: colour = how much the thoughts before a token raised "
                "its log-probability; hover for w and base / mixed probability.")
    st.markdown(token_html(view[view["position"].isin(window)], "help",
                           selected=st.session_state.get("pg_pos"),
                           tooltip_cols=("w", "base_prob", "mixed_prob", "logp_gain")),
                unsafe_allow_html=True)
    return qs


COLOURS = {"entropy": "entropy (uncertainty)", "nll": "surprise (NLL of the true token)"}
colour = st.radio("Colour tokens by", list(COLOURS), horizontal=True, key="pg_colour",
                  format_func=COLOURS.get)
st.caption("<span style='outline:2px solid #7b1fa2;font-weight:600'>Outlined</span> = forking token "
           "(top 20 % entropy of this text); blue outline = selected position. Hover a token for "
           "its numbers.", unsafe_allow_html=True)

a = analyse(spec_a, text, "A")
b = analyse(spec_b, text, "B") if both and spec_b is not None else None
if a is None:
    st.stop()
res_a, pm_a, toks_a = a
win = windowed(toks_a, "pg")["position"].tolist()
positions = toks_a["position"].tolist()[1:]
# A new text (or model) starts at its biggest fork: a position number kept from the old text
# would name a different token there.
if st.session_state.get("pg_pos_for") != (res_a, text) or st.session_state.get("pg_pos") not in positions:
    st.session_state["pg_pos"] = pg.default_position(toks_a)
    st.session_state["pg_pos_for"] = (res_a, text)
qs_tables: dict[str, object] = {}

if b is None:
    token_view(toks_a, win)
    qs_tables["A"] = thoughts_view(res_a, pm_a, toks_a, win, "A")
    table = toks_a[["position", "token", "entropy", "prob", "nll", "forking", "top", "top_prob"]]
    if qs_tables["A"] is not None:
        table = table.merge(qs_tables["A"][["position", "w", "base_prob", "mixed_prob", "logp_gain"]],
                            on="position", how="left")
else:
    res_b, pm_b, toks_b = b
    # token_html's scales are absolute: equal shades mean equal values in A and B
    ca, cb = st.columns(2)
    with ca:
        st.markdown(f"**A** · `{res_a}`")
        token_view(toks_a, win)
        qs_tables["A"] = thoughts_view(res_a, pm_a, toks_a, win, "A")
    with cb:
        st.markdown(f"**B** · `{res_b}`")
        token_view(toks_b, win)
        qs_tables["B"] = thoughts_view(res_b, pm_b, toks_b, win, "B")
    try:
        diff = pg.compare(toks_a, toks_b)
    except LabError as e:
        st.error(str(e))
        st.stop()
    st.subheader("Differences, B − A")
    shown = diff[diff["position"].isin(win)].assign(
        up=diff["logp_gain"].clip(lower=0), down=(-diff["logp_gain"]).clip(lower=0))
    tips = ("prob_gain", "logp_gain", "entropy_change")
    d1, d2 = st.columns(2)
    d1.markdown("**B gives the true token more probability** (darker = larger log-prob gain)")
    d1.markdown(token_html(shown, "up", tooltip_cols=tips), unsafe_allow_html=True)
    d2.markdown("**B gives it less probability**")
    d2.markdown(token_html(shown, "down", tooltip_cols=tips), unsafe_allow_html=True)
    bars = [("prob_gain", "Δ probability of the true token", ("#2e7d32", "#c62828")),   # better / worse
            ("entropy_change", "Δ entropy (nats)", ("#ef6c00", "#1565c0"))]          # less / more sure
    for col, (y, title, (up, down)) in zip(st.columns(2), bars):
        fig = go.Figure(go.Bar(x=shown["position"], y=shown[y], hovertext=shown["token"],
                               marker_color=[up if v >= 0 else down for v in shown[y].fillna(0)]))
        fig.update_layout(title=title, height=260, margin=dict(l=10, r=10, t=40, b=10),
                          xaxis_title="token position")
        col.plotly_chart(fig, width="stretch")
    table = diff[["position", "token", "prob_a", "prob_b", "prob_gain", "logp_gain", "entropy_a",
                  "entropy_b", "entropy_change", "forking_a", "forking_b"]]

with st.expander("Per-token table", expanded=b is None and len(toks_a) <= 60):
    st.dataframe(table, hide_index=True, width="stretch", height=300,
                 column_config={"token": st.column_config.TextColumn(width="small")})


# ---- one position: thoughts, rollouts and their rewards -------------------------------------

st.subheader("Thoughts at one position")
by_pos = toks_a.set_index("position")
pos = st.selectbox("Position (the token to predict)", positions, key="pg_pos",
                   format_func=lambda p: f"{p}: {by_pos.loc[p, 'token']!r}  (entropy "
                                         f"{by_pos.loc[p, 'entropy']:.2f}, p = {by_pos.loc[p, 'prob']:.3f})")
prefix = "".join(toks_a[toks_a["position"] < pos]["token"].tolist())
st.markdown(f"**Context** …`{prefix[-300:]}` → true next token **{by_pos.loc[pos, 'token']!r}**")

samplers = {"A": (res_a, pm_a)} | ({"B": (b[0], b[1])} if b is not None else {})
who = st.radio("Sample with", list(samplers), horizontal=True, key="pg_who") if len(samplers) > 1 else "A"
res, pm = samplers[who]

qs = qs_tables.get(who)
if qs is not None:
    row = qs.set_index("position").loc[pos]
    m = st.columns(3)
    m[0].metric("Quiet-STaR: p(next), no thought", f"{row['base_prob']:.4f}")
    m[1].metric("…mixed with the thoughts", f"{row['mixed_prob']:.4f}", delta=signed_delta(row["prob_gain"]))
    m[2].metric("Mixing weight w", f"{row['w']:.3f}")
    st.dataframe(row["thoughts"], hide_index=True, width="stretch")

common = dict(seed=int(seed), corrupted=bool(corrupted), temperature=float(temperature))
tab_rlp, tab_rpt = st.tabs(["RLP thoughts", "RPT rollouts"])
with tab_rlp:
    st.caption("G thoughts after `<think>` at this position; reward = log p(true token | prefix, "
               "thought) − log p(true token | prefix), the same model scoring both (RLP).")
    args = ("rlp", res, data_dir(), text, int(pos))
    kw = dict(n_thoughts=int(n_thoughts), max_thought_tokens=int(max_new), **common)
    if st.button("Sample RLP thoughts", key="pg_rlp_go"):
        st.session_state["pg_rlp_req"] = (args, kw)
    if st.session_state.get("pg_rlp_req") == (args, kw):
        try:
            with st.spinner("Sampling thoughts…"):
                s = _sample(*args, **kw)
            m = st.columns(3)
            m[0].metric("p(true token), empty thought", f"{s.info['no_thought_prob']:.4f}",
                        help="Under RLP's prompt (system prompt, then the text, then an empty "
                             "<think></think>), so it differs from the per-token table's p = "
                             f"{by_pos.loc[pos, 'prob']:.4f}, which reads the plain text.")
            m[1].metric("Mean reward (nats)", f"{s.info['mean_reward']:+.3f}",
                        help="Reward = log p(true token | thought) − log p(true token | empty thought), "
                             "in nats: +0.69 means the thought doubled the token's probability.")
            m[2].metric("Best reward (nats)", f"{s.rows['reward'].max():+.3f}")
            st.dataframe(s.rows.sort_values("reward", ascending=False), hide_index=True, width="stretch",
                         column_config={"thought": st.column_config.TextColumn(width="medium"),
                                        "prob": "p(token | thought)", "logp": "log p",
                                        "hit": "top-1 hit"})
        except LabError as e:
            st.error(str(e))
with tab_rpt:
    st.caption("G rollouts of the RPT prompt (reason, then box the next token); reward 1 when the "
               "boxed text is byte-exactly the true continuation up to a token boundary.")
    args = ("rpt", res, data_dir(), text, int(pos))
    kw = dict(n_rollouts=int(n_thoughts), max_new_tokens=int(max_new), **common)
    if st.button("Sample RPT rollouts", key="pg_rpt_go"):
        st.session_state["pg_rpt_req"] = (args, kw)
    if st.session_state.get("pg_rpt_req") == (args, kw):
        try:
            with st.spinner("Sampling rollouts…"):
                s = _sample(*args, **kw)
            m = st.columns(3)
            m[0].metric("Answer to box", repr(s.target))
            m[1].metric("Reward (accuracy)", f"{s.info['accuracy']:.0%}")
            m[2].metric("No box (format failures)", f"{s.info['format_fail']:.0%}")
            st.dataframe(s.rows.drop(columns=["completion"]), hide_index=True, width="stretch",
                         column_config={"reasoning": st.column_config.TextColumn(width="large")})
            with st.expander("Full completions"):
                for i, c in enumerate(s.rows["completion"]):
                    st.code(c, language=None)
        except LabError as e:
            st.error(str(e))
