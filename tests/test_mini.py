"""The miniature from-scratch family: its tokenizer, its presets as plain HF folders, a real
training run that lowers the loss, the easy corpus level, and the calibrated preset spec."""
import re

import pytest
import torch

from lab import mathgen
from lab.mini import EOS, MINI_VOCAB, THOUGHT_TOKENS


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private tokenizer cache, so the build-and-reload path runs for real."""
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("cache")
    mp.setenv("THOUGHTLAB_CACHE", str(folder))
    yield folder
    mp.undo()


def test_tokenizer_is_deterministic_and_round_trips(cache):
    from lab.mini import mini_tokenizer, tokenizer_folder, train_tokenizer
    a, b = train_tokenizer(), train_tokenizer()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert 256 < len(a) <= MINI_VOCAB
    folder = tokenizer_folder()
    assert folder.is_relative_to(cache) and (folder / "tokenizer.json").exists()
    tok = mini_tokenizer()                                   # reloaded from the cache
    assert tok.backend_tokenizer.to_str() == a.backend_tokenizer.to_str()
    for text in [mathgen.make_problem(5).text, mathgen.make_problem(2, "format", level="easy").text,
                 "<think> 12 x 3 = 36 </think>\n\n\\boxed{ 36} ünïcode"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
    # Digits are single tokens; the objectives' markers and EOS are single ids.
    pieces = tok.convert_ids_to_tokens(tok.encode(" 1234", add_special_tokens=False))
    assert [p for p in pieces if p.strip("Ġ")] == ["1", "2", "3", "4"]
    for special in [EOS] + THOUGHT_TOKENS:
        assert len(tok.encode(special, add_special_tokens=False)) == 1
    assert tok.eos_token == tok.pad_token == EOS


def test_preset_builds_seeded_and_saves_as_plain_hf_folder(cache, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lab.models import check_model_spec, describe, load_model
    a, b = load_model("mini-xs", seed=3), load_model("mini-xs", seed=3)
    other = load_model("mini-xs", seed=4)
    wa = a.model.get_input_embeddings().weight
    assert torch.equal(wa, b.model.get_input_embeddings().weight)
    assert not torch.equal(wa, other.model.get_input_embeddings().weight)
    d = describe(a.model)
    assert d["model_type"] == "llama" and d["vocab"] == len(a.tokenizer) <= MINI_VOCAB
    assert d["params"] < 1_000_000                           # mini-xs stays tiny
    assert describe(load_model("mini").model)["params"] > 3 * d["params"]

    a.model.save_pretrained(tmp_path, safe_serialization=True)
    a.tokenizer.save_pretrained(tmp_path)
    assert "local folder" in check_model_spec(str(tmp_path))
    ids = torch.tensor([a.tokenizer.encode(mathgen.make_problem(0, level="easy").text)])
    back = AutoModelForCausalLM.from_pretrained(tmp_path)     # no lab code needed
    assert AutoTokenizer.from_pretrained(tmp_path).encode("Ava has 7 apples.") == \
        a.tokenizer.encode("Ava has 7 apples.")
    with torch.no_grad():
        assert torch.allclose(back(ids).logits, a.model.eval()(ids).logits, atol=1e-5)


def test_training_run_lowers_the_loss_and_checkpoints_a_plain_folder(cache, data_dir):
    from transformers import AutoModelForCausalLM

    from lab.config import RunConfig
    from lab.store import Store
    from lab.train import train
    store = Store(data_dir).init()
    cfg = RunConfig.from_dict(dict(objective="ntp", model="mini-xs", corpus="builtin:easy",
                                   corpus_docs=100, seq_len=32, batch_size=4, max_steps=12, lr=1e-2,
                                   warmup_steps=0, sample_every=100, n_samples=0,
                                   checkpoint_every=0)).validate()
    rid = store.create_run(config=cfg.to_dict())
    result = train(cfg, rid, store)
    loss = store.metrics([rid], ["loss"]).sort_values("step")["value"].tolist()
    assert len(loss) == 12
    assert sum(loss[-3:]) / 3 < sum(loss[:3]) / 3 - 1.0       # ln(503) = 6.2 falls fast
    model = AutoModelForCausalLM.from_pretrained(result.checkpoint)
    assert model.config.vocab_size <= MINI_VOCAB


def _chain_values(problem) -> list[tuple[int, str, int, int]]:
    return [(int(a), op, int(b), int(c)) for a, op, b, c in
            re.findall(r"(\d+) ([-+x/]) (\d+) = (\d+)", problem.solution)]


def test_easy_level_is_correct_small_and_disjoint_from_train():
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "x": lambda a, b: a * b,
           "/": lambda a, b: a // b}
    train = mathgen.problems(3000, "train", 0, level="easy") + \
        mathgen.problems(1000, "train", 1000, level="easy")
    assert mathgen.problems(5, "test", 0, level="easy") == mathgen.problems(5, "test", 0, level="easy")
    for p in train[:500]:
        chain = _chain_values(p)
        assert 1 <= len(chain) <= 2 and chain[-1][3] == p.answer
        assert all(ops[op](a, b) == c and c >= 0 for a, op, b, c in chain)
        assert chain[0][0] <= 9
    seen = {tuple(_chain_values(p)) for p in train}
    for split in ("test", "longer", "format"):
        held = mathgen.problems(300, split, 0, level="easy")
        assert not any(tuple(_chain_values(p)) in seen for p in held), split
    assert all(3 <= len(_chain_values(p)) <= 4 for p in mathgen.problems(50, "longer", 0, level="easy"))
    assert mathgen.make_problem(0).answer == mathgen.make_problem(0, level="standard").answer


def test_easy_benchmarks_read_the_easy_level():
    from lab.evaluation.benchmarks import load_items
    items = load_items("easy-test", None, 20)
    assert [i.meta["question"] for i in items] == [p.question for p in mathgen.problems(20, "test", 0, "easy")]
    docs = load_items("easy-heldout-nll", None, 5)
    assert docs[0].prompt == mathgen.make_problem(0, "test", 0, "easy").text


def test_answer_preset_uses_the_mini_model_and_plans(cache, data_dir):
    import lab.experiments as ex
    from lab.experiments.plan import make_plan
    spec = ex.load_preset("answer-cpu")
    assert spec.model in ("mini", "mini-xs") and spec.corpus == "builtin:easy" and len(spec.seeds) >= 3
    assert spec.pretrain.steps > 0 and {a.objective for a in spec.arms} >= {"ntp", "quiet-star"}
    plan = make_plan(spec.validate(data_dir), "x", data_dir)
    assert plan.budget_flops > 0
    assert plan.jobs[0].key == "pretrain"


def test_training_seeds_never_reach_the_standard_test_items():
    """Seed 10's training problems used to be math-test's items (integer seeds ran into the
    test split's range); only chance repeats of the same text may remain."""
    test = {p.text for p in mathgen.problems(1000, "test", 0)}
    for seed in (0, 9, 10, 25):
        train = mathgen.problems(1000, "train", seed)
        assert sum(p.text in test for p in train) <= 3, seed
    assert mathgen.make_problem(7, "train", 3).text == mathgen.make_problem(7, "train", 3).text
