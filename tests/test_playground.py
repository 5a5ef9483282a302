"""The Playground: lab/playground.py against direct forwards (tiny random models), the page
through the app (AppTest), and one real-browser check that typed text comes back coloured."""
from __future__ import annotations

import json

import pytest
import streamlit as st
import torch
import torch.nn.functional as F
from conftest import ROOT, app_page
from streamlit.testing.v1 import AppTest

from lab import playground as pg
from lab import rl
from lab.checkpoint import save_checkpoint
from lab.entropy import token_entropy
from lab.errors import LabError
from lab.objectives import rlp as rlp_obj
from lab.objectives.quiet_star import new_head
from lab.objectives.rpt import rpt_reward, token_bytes

torch.set_num_threads(1)
TEXT = "Tom has 3 apples and buys 4 more. How many apples does he have now?"
QS_RUN = "qsrun"


@pytest.fixture(scope="module")
def tiny() -> pg.PlayModel:
    return pg.load("tiny-random")


@pytest.fixture(scope="module")
def qs_data(tmp_path_factory):
    """A data folder holding a fake Quiet-STaR run checkpoint: tiny-random weights and a mixing
    head with w = 0.3 everywhere (a zero-initialised head would give w = 0)."""
    d = tmp_path_factory.mktemp("pgdata")
    lm = pg.load("tiny-random").loaded
    head = new_head(lm.model, lm.tokenizer, n_ahead=5)
    with torch.no_grad():
        head.mlp[-1].bias.fill_(0.3)
    save_checkpoint(d, QS_RUN, 3, lm.model, lm.tokenizer, extras={"qs_head": head}, optimizer=None,
                    state={}, objective_tensors={})
    return d


# ---- per-token statistics -------------------------------------------------------------------

def test_token_table_equals_a_direct_forward(tiny):
    df = pg.token_table(tiny, TEXT)
    ids = tiny.tokenizer(TEXT, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert df["token_id"].tolist() == ids[0].tolist() and df["position"].tolist() == list(range(ids.shape[1]))
    with torch.no_grad():
        logits = tiny.model(input_ids=ids).logits[0, :-1].float()
    logp = F.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
    pred = df.iloc[1:]
    assert df.iloc[0][["entropy", "nll", "prob"]].isna().all()          # token 0 has no prediction
    torch.testing.assert_close(torch.tensor(pred["entropy"].tolist()), token_entropy(logits))
    torch.testing.assert_close(torch.tensor(pred["prob"].tolist()), logp.exp())
    torch.testing.assert_close(torch.tensor(pred["nll"].tolist()), -logp)
    assert pred["forking"].sum() == round(0.2 * len(pred))
    assert pred.loc[pred["forking"], "entropy"].min() >= pred.loc[~pred["forking"], "entropy"].max()
    assert pred["top"].tolist() == [tiny.tokenizer.decode([i]) for i in logits.argmax(-1).tolist()]
    top = pred.loc[pred["token"].str.strip() != "", "entropy"].idxmax()
    assert pg.default_position(df) == df.loc[top, "position"]
    s = pg.summary(df)
    assert s["tokens"] == len(df) and s["mean_nll"] == pytest.approx(float(-logp.mean()), rel=1e-5)


def test_text_is_cut_and_too_short_text_is_refused(tiny):
    assert len(pg.token_table(tiny, TEXT, max_tokens=5)) == 5
    with pytest.raises(LabError, match="at least two tokens"):
        pg.token_table(tiny, "Hi")


def test_compare_gives_per_token_differences(tiny):
    a = pg.token_table(tiny, TEXT)
    b = pg.token_table(pg.load("tiny-random-qwen2"), TEXT)         # same tokenizer, other weights
    d = pg.compare(a, b)
    assert len(d) == len(a) and d["token"].tolist() == a["token"].tolist()
    pred = d.iloc[1:]
    assert pred["prob_gain"].tolist() == pytest.approx((b["prob"] - a["prob"]).iloc[1:].tolist())
    assert pred["logp_gain"].tolist() == pytest.approx((a["nll"] - b["nll"]).iloc[1:].tolist())
    assert pred["entropy_change"].tolist() == pytest.approx((b["entropy"] - a["entropy"]).iloc[1:].tolist())
    assert (pg.compare(a, a).iloc[1:][["prob_gain", "logp_gain", "entropy_change"]] == 0).all().all()
    other = a.assign(token_id=a["token_id"] + 1)
    with pytest.raises(LabError, match="different tokens"):
        pg.compare(a, other)


# ---- Quiet-STaR thoughts from a run checkpoint ----------------------------------------------

def test_quiet_star_checkpoint_thoughts(qs_data):
    assert pg.resolve_spec(f"run:{QS_RUN}", qs_data) == f"run:{QS_RUN}@3"   # pinned for the cache
    pm = pg.load(f"run:{QS_RUN}", qs_data)
    assert pm.head is not None and int(pm.head.n_ahead) == 5
    toks = pg.token_table(pm, TEXT)
    th = pg.thought_table(pm, TEXT, n_thoughts=2, seed=1)
    assert th["position"].tolist() == toks["position"].tolist()[1:]     # one row per predicted token
    assert th["w"].tolist() == pytest.approx([0.3] * len(th), abs=1e-5)
    assert th["base_prob"].tolist() == pytest.approx(toks["prob"].iloc[1:].tolist(), rel=1e-4)
    assert all(len(t) == 2 and all(x["n_tokens"] == 2 for x in t) for t in th["thoughts"])  # n_ahead 5
    assert th["prob_gain"].tolist() == pytest.approx((th["mixed_prob"] - th["base_prob"]).tolist())
    again = pg.thought_table(pm, TEXT, n_thoughts=2, seed=1)
    assert again["thoughts"].tolist() == th["thoughts"].tolist()
    assert pg.thought_table(pm, TEXT, n_thoughts=2, seed=2)["thoughts"].tolist() != th["thoughts"].tolist()
    bad = pg.thought_table(pm, TEXT, n_thoughts=2, seed=1, corrupted=True)
    assert bad["thoughts"].tolist() != th["thoughts"].tolist()
    greedy = pg.thought_table(pm, TEXT, n_thoughts=2, temperature=0.0)        # the page's slider allows 0
    assert greedy["mixed_prob"].notna().all()
    assert [t[0]["text"] for t in greedy["thoughts"]] == [t[1]["text"] for t in greedy["thoughts"]]


def test_thoughts_need_a_quiet_star_head(tiny):
    assert tiny.head is None
    with pytest.raises(LabError, match="no Quiet-STaR mixing head"):
        pg.thought_table(tiny, TEXT)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(LabError, match="'nope' has no saved checkpoint"):
        pg.load("run:nope", tmp_path)
    with pytest.raises(LabError, match="does not exist"):
        pg.load(str(tmp_path / "no-such-model"))


# ---- RLP thoughts and RPT rollouts at one position ------------------------------------------

def test_rlp_thoughts_rewards_against_no_thought(tiny):
    pos = 6
    s = pg.rlp_thoughts(tiny, TEXT, pos, n_thoughts=3, max_thought_tokens=6, seed=0)
    ids = pg.encode(tiny.tokenizer, TEXT)
    assert s.kind == "rlp" and s.position == pos and len(s.rows) == 3
    assert s.target == tiny.tokenizer.decode([ids[pos]])
    assert (s.rows["n_tokens"] <= 6).all()
    # the no-thought score, by hand: system head · x_<t · <think></think> → log p(x_t)
    tok = tiny.tokenizer
    seq = (rl.chat_head(tok, rlp_obj.SYSTEM_PROMPT) + ids[:pos]
           + tok.encode(rlp_obj.THINK_OPEN, add_special_tokens=False)
           + tok.encode(rlp_obj.THINK_CLOSE, add_special_tokens=False))
    with torch.no_grad():
        ref = F.log_softmax(tiny.model(input_ids=torch.tensor([seq])).logits[0, -1].float(), -1)[ids[pos]]
    assert s.info["no_thought_logp"] == pytest.approx(ref.item(), abs=1e-4)
    expected = s.rows["logp"] - s.info["no_thought_logp"]
    assert s.rows["reward"].tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    assert s.rows["advantage"].sum() == pytest.approx(0.0, abs=1e-5)           # RLOO
    same = pg.rlp_thoughts(tiny, TEXT, pos, n_thoughts=3, max_thought_tokens=6, seed=0)
    assert same.rows.equals(s.rows)
    other = pg.rlp_thoughts(tiny, TEXT, pos, n_thoughts=3, max_thought_tokens=6, seed=1)
    assert other.rows["thought"].tolist() != s.rows["thought"].tolist()
    bad = pg.rlp_thoughts(tiny, TEXT, pos, n_thoughts=3, max_thought_tokens=6, seed=0, corrupted=True)
    assert bad.rows["n_tokens"].tolist() == s.rows["n_tokens"].tolist()
    assert bad.rows["thought"].tolist() != s.rows["thought"].tolist()
    with pytest.raises(LabError, match="outside the text"):
        pg.rlp_thoughts(tiny, TEXT, 0)


def test_rpt_rollouts_byte_exact_rewards(tiny):
    pos = 6
    s = pg.rpt_rollouts(tiny, TEXT, pos, n_rollouts=3, max_new_tokens=8, seed=0)
    ids = pg.encode(tiny.tokenizer, TEXT)
    truth = token_bytes(tiny.tokenizer, ids)[pos:]
    assert s.kind == "rpt" and len(s.rows) == 3 and s.target == tiny.tokenizer.decode([ids[pos]])
    assert s.context == tiny.tokenizer.decode(ids[:pos])
    for r in s.rows.to_dict("records"):
        assert (r["reward"], r["prediction"]) == rpt_reward(r["completion"], truth)
    assert s.info["format_fail"] == s.rows["prediction"].isna().mean()
    assert pg.rpt_rollouts(tiny, TEXT, pos, n_rollouts=3, max_new_tokens=8, seed=0).rows.equals(s.rows)
    bad = pg.rpt_rollouts(tiny, TEXT, pos, n_rollouts=3, max_new_tokens=8, seed=0, corrupted=True)
    assert len(bad.rows) == 3 and all(c.startswith("<think>\n") for c in bad.rows["completion"])


# ---- benchmark items --------------------------------------------------------------------------

def test_read_items_gsm8k_and_csqa(tmp_path):
    g = tmp_path / "g.jsonl"
    g.write_text(json.dumps({"question": "2+2?", "answer": "2+2=<<2+2=4>>4\n#### 4"}) + "\n")
    c = tmp_path / "c.jsonl"
    c.write_text(json.dumps({"question": "Sky colour?", "answerKey": "B",
                             "choices": {"label": ["A", "B"], "text": ["red", "blue"]}}) + "\n")
    assert pg.read_items(g) == [("0: 2+2?", "Q: 2+2?\nA: 2+2=4\nThe answer is 4.")]
    assert pg.read_items(c)[0][1] == "Q: Sky colour?\n(A) red\n(B) blue\nA: (B) blue"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hello"}\n')
    with pytest.raises(LabError, match="neither GSM8K"):
        pg.read_items(bad)
    with pytest.raises(LabError, match="does not exist"):
        pg.read_items(tmp_path / "none.jsonl")
    for name, path in pg.default_item_files(ROOT).items():      # the shared files, when present
        assert pg.read_items(path, limit=2)[0][1].startswith("Q: ")


# ---- the page, through the app ----------------------------------------------------------------

def page(data_dir, monkeypatch, **query) -> AppTest:
    return app_page("pages/playground.py", data_dir, monkeypatch, **query)


def rlp_rows(at: AppTest):
    at.button(key="pg_rlp_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at.dataframe[-1].value


def test_page_text_in_table_out_and_deterministic_thoughts(tmp_path, monkeypatch, tiny):
    at = page(tmp_path, monkeypatch, model="tiny-random")
    assert not at.exception, at.exception
    at.text_area(key="pg_text").set_value(TEXT).run()
    table = at.dataframe[0].value
    expected = pg.token_table(tiny, TEXT)
    assert table["token"].tolist() == expected["token"].tolist()
    assert table["entropy"].iloc[1:].tolist() == pytest.approx(expected["entropy"].iloc[1:].tolist())
    html = "".join(m.value for m in at.markdown)
    assert html.count('<span title="pos') == len(expected)
    assert html.count("#7b1fa2;font-weight:600;") == expected["forking"].sum()
    at.selectbox(key="pg_pos").set_value(5).run()
    at.number_input(key="pg_g").set_value(3).run()
    at.number_input(key="pg_max_new").set_value(6).run()
    first = rlp_rows(at)
    assert len(first) == 3 and {"thought", "reward"} <= set(first.columns)
    st.cache_data.clear()                       # recompute, not a cache hit: same seed, same thoughts
    assert rlp_rows(at).equals(first)
    at.number_input(key="pg_seed").set_value(7).run()
    assert rlp_rows(at)["thought"].tolist() != first["thought"].tolist()
    at.button(key="pg_rpt_go").click().run()
    assert not at.exception and not at.error
    assert len(at.dataframe[-1].value) == 3


def test_page_missing_checkpoint_shows_a_message(tmp_path, monkeypatch):
    at = page(tmp_path, monkeypatch, model="run:nope")
    assert not at.exception
    assert any("'nope' has no saved checkpoint" in e.value for e in at.error)


def test_page_quiet_star_checkpoint_and_comparison(qs_data, monkeypatch):
    at = page(qs_data, monkeypatch, model="tiny-random", model_b=f"run:{QS_RUN}")
    at.toggle(key="pg_compare").set_value(True).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    text = "".join(m.value for m in at.markdown)
    assert "Quiet-STaR (B)" in text and "Quiet-STaR (A)" not in text      # only B has a head
    assert any(h.value == "Differences, B − A" for h in at.subheader)
    assert {"prob_gain", "entropy_change"} <= set(at.dataframe[0].value.columns)
    at.radio(key="pg_who").set_value("B").run()
    assert any("Mixing weight" in m.label for m in at.metric)


# ---- a real browser -----------------------------------------------------------------------------

@pytest.mark.timeout(300)
def test_browser_types_text_and_sees_coloured_tokens(tmp_path):
    from browser import browser_page, lab_server, set_number, shot, wait_idle
    sentence = "The cat sat on the mat because it was warm, and then it fell asleep in the sun."
    with lab_server(tmp_path) as url, browser_page(height=2300) as p:
        # A direct page URL as the server's first visit: Streamlit would run pages/playground.py
        # alone (its old pages-folder mode, a raw list of pages/ files and no sidebar) unless
        # the page reruns through app.py's navigation (pages/common.py).
        p.goto(url + "/playground")
        p.get_by_role("heading", name="Playground").wait_for()
        p.get_by_role("link", name="Forking tokens", exact=True).wait_for()      # app.py's navigation
        p.get_by_text("Token-level reasoning objectives during pretraining").wait_for()  # its sidebar
        assert p.get_by_role("link", name="experiment form").count() == 0     # not the raw listing
        wait_idle(p)
        box = p.get_by_label("Text", exact=True)
        box.fill(sentence)
        box.press("Control+Enter")
        wait_idle(p)
        p.locator('span[title^="pos 19 "]').first.wait_for()          # "." ending the sentence
        spans = p.locator('span[title^="pos "]')
        assert spans.count() == 20
        styles = {spans.nth(i).get_attribute("style").split(";")[0] for i in range(spans.count())}
        assert len(styles) > 3                                        # coloured, not one flat shade
        p.get_by_text("Mean entropy", exact=True).wait_for()
        assert p.locator('[data-testid="stException"]').count() == 0
        p.get_by_text("Per-token table").click()                     # fold it: the shot shows the text
        set_number(p, "Thoughts per position (G)", 3)                # short thoughts: a shared CPU
        set_number(p, "Max thought tokens", 12)
        p.get_by_role("button", name="Sample RLP thoughts").click()
        p.locator('[data-testid="stMetricLabel"]').filter(has_text="Mean reward").wait_for(timeout=180_000)
        wait_idle(p)
        assert p.locator('[data-testid="stException"]').count() == 0
        shot(p, "playground")


def test_a_new_text_moves_the_position_picker_to_a_token_of_that_text(tmp_path, monkeypatch, tiny):
    at = page(tmp_path, monkeypatch, model="tiny-random")
    at.text_area(key="pg_text").set_value(TEXT).run()
    at.selectbox(key="pg_pos").set_value(4).run()
    new = "The committee will vote on the budget next week after a long debate."
    at.text_area(key="pg_text").set_value(new).run()
    assert not at.exception
    table = pg.token_table(tiny, new)
    pos = at.selectbox(key="pg_pos").value
    assert pos == pg.default_position(table)               # not the old text's position 4
    shown = at.selectbox(key="pg_pos").format_func(pos)
    assert shown.startswith(f"{pos}: {table.set_index('position').loc[pos, 'token']!r}")
    context = next(m.value for m in at.markdown if m.value.startswith("**Context**"))
    assert table.set_index("position").loc[pos, "token"] in context
    assert not [m for m in at.metric if "-0.0000" in str(m.proto.delta)]
