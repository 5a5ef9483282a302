"""Bad input, table-driven, through the CLI (as a subprocess, config files included) and the
launch validation the web form uses: each case names what is wrong and leaves no run behind."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import lab_cli

from jobs.manager import validate
from lab.cli import build_parser, config_from_args
from lab.errors import LabError
from lab.store import Store


def make_files(root: Path) -> dict[str, str]:
    """Broken inputs on disk; returns name -> path."""
    files = {}

    def put(name: str, data: bytes) -> None:
        (root / name).write_bytes(data)
        files[name] = str(root / name)
    put("empty.txt", b"")
    put("binary.txt", b"\x00\xff\x00\x10" * 50)
    put("latin1.txt", "naïve café\n".encode("latin-1"))
    put("hugeline.txt", b"y" * 5_000_001)
    put("missing_field.jsonl", b'{"title": "no text here"}\n')
    put("broken.jsonl", b'{"text": "a"}\n{"text": \n')
    put("table.csv", b"text\nhello\n")
    put("notyaml.yaml", b"max_steps: [1, 2\n")
    put("list.yaml", b"- 1\n- 2\n")
    put("unknown_key.yaml", b"learning_rate: 0.1\n")
    put("bad_type.yaml", b"max_steps: lots\n")
    put("bad_param.yaml", b"objective: quiet-star\nparams: {n_aheadd: 3}\n")
    put("params_number.yaml", b"params: 5\n")
    put("params_list.yaml", b"params: [1, 2]\n")
    put("name_list.yaml", b"name: [1, 2]\n")
    put("after_nested.yaml", b"after: [{a: 1}]\n")
    put("number_key.yaml", b"1: 2\nmax_steps: 3\n")
    put("nested_param.yaml", b"objective: quiet-star\nparams: {n_ahead: {x: 1}}\n")
    put("yes_steps.yaml", b"max_steps: yes\n")
    put("nan_lr.yaml", b"lr: .nan\n")
    put("null_text.jsonl", b'{"text": "fine"}\n{"text": null}\n')
    put("number_text.jsonl", b'{"text": 42}\n')
    os.mkfifo(root / "fifo.txt")        # reading it would block forever
    files["fifo.txt"] = str(root / "fifo.txt")
    weights_less = root / "no_weights"
    weights_less.mkdir()
    (weights_less / "config.json").write_text(json.dumps({"model_type": "llama"}))
    files["no_weights"] = str(weights_less)
    bert = root / "bert"
    from transformers import BertConfig, BertModel
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16, vocab_size=50)).save_pretrained(bert)
    files["bert"] = str(bert)
    files["a_file"] = files["empty.txt"]
    return files


# (case, CLI arguments with {file} placeholders, expected message fragment)
CASES = [
    ("unknown model id", ["--model", "nobody/no-such-model-123"], "Unknown model"),
    ("missing model folder", ["--model", "./no/such/folder"], "does not exist"),
    ("folder without weights", ["--model", "{no_weights}"], "no weights"),
    ("model path is a file", ["--model", "{a_file}"], "is a file"),
    ("non-causal model", ["--model", "{bert}"], "not a causal language model"),
    ("checkpoint of unknown run", ["--model", "run:19990101-000000-dead"], "no saved checkpoint"),
    ("empty corpus", ["--corpus", "{empty.txt}"], "is empty"),
    ("binary corpus", ["--corpus", "{binary.txt}"], "looks binary"),
    ("non-UTF-8 corpus", ["--corpus", "{latin1.txt}"], "not UTF-8"),
    ("huge-line corpus", ["--corpus", "{hugeline.txt}"], "characters (limit"),
    ("JSONL missing field", ["--corpus", "{missing_field.jsonl}"], "no text field 'text'"),
    ("JSONL broken line", ["--corpus", "{broken.jsonl}"], "line 2: not valid JSON"),
    ("unsupported corpus type", ["--corpus", "{table.csv}"], "unsupported type .csv"),
    ("missing corpus", ["--corpus", "nothing/here.txt"], "does not exist"),
    ("zero steps", ["--max-steps", "0"], "max_steps must be at least 1"),
    ("negative steps", ["--max-steps", "-3"], "max_steps must be at least 1"),
    ("zero learning rate", ["--lr", "0"], "must be positive"),
    ("negative learning rate", ["--lr", "-0.01"], "must be positive"),
    ("huge learning rate", ["--lr", "5"], "far too large"),
    ("zero batch", ["--batch-size", "0"], "batch_size must be at least 1"),
    ("non-numeric steps", ["--max-steps", "ten"], "must be a whole number"),
    ("rho out of range", ["--rho", "0"], "rho"),
    ("unknown objective", ["--objective", "telepathy"], "Unknown objective"),
    ("thought longer than context", ["--objective", "quiet-star", "--seq-len", "16",
                                     "--param", "n_ahead=20"], "must be smaller than seq_len"),
    ("G = 1 for RLOO", ["--objective", "rlp", "--param", "group_size=1"], "at least 2 for RLOO"),
    ("G = 1 for GRPO", ["--objective", "rpt", "--param", "group_size=1"], "at least 2"),
    ("unknown objective setting", ["--param", "n_ahead=3"], "ntp params"),
    ("param without value", ["--param", "n_ahead"], "KEY=VALUE"),
    ("fp16 on CPU", ["--device", "cpu", "--mixed-precision", "fp16"], "fp16 mixed precision needs a GPU"),
    ("GPU asked, none here", ["--device", "gpu"], "no GPU was found"),
    ("config not YAML", ["--config", "{notyaml.yaml}"], "is not valid YAML"),
    ("config not a mapping", ["--config", "{list.yaml}"], "must hold a mapping"),
    ("config unknown key", ["--config", "{unknown_key.yaml}"], "Unknown setting(s): learning_rate"),
    ("config bad type", ["--config", "{bad_type.yaml}"], "must be a whole number"),
    ("config bad objective param", ["--config", "{bad_param.yaml}"], "quiet-star params"),
    ("config file missing", ["--config", "nope.yaml"], "does not exist"),
    # Range checks of lab/limits.py: store columns, seeds, finite numbers, machine-sized counts.
    ("NaN learning rate", ["--lr", "nan"], "lr must be a finite number"),
    ("infinite weight decay", ["--weight-decay", "inf"], "weight_decay must be a finite number"),
    ("NaN grad clip", ["--grad-clip", "nan"], "grad_clip must be a finite number"),
    ("NaN rho", ["--rho", "nan"], "rho must be a finite number"),
    ("infinite FLOP budget", ["--max-flops", "inf"], "max_flops must be a finite number"),
    ("infinite objective param", ["--objective", "quiet-star", "--param", "policy_weight=inf"],
     "quiet-star policy_weight must be a finite number"),
    ("NaN objective param", ["--objective", "rlp", "--param", "temperature=nan"],
     "rlp temperature must be a finite number"),
    ("steps beyond the store's INTEGER", ["--max-steps", "3000000000"], "max_steps must be at most 2,147,483,647"),
    ("negative seed", ["--seed", "-1"], "seed must be between 0 and 4,294,967,295"),
    ("seed beyond numpy's", ["--seed", "99999999999"], "seed must be at most 4,294,967,295"),
    ("a billion-row batch", ["--batch-size", "1000000000"], "batch_size must be at most 65,536"),
    ("a billion documents", ["--corpus-docs", "1000000000"], "corpus_docs must be at most 1,000,000"),
    ("micro-batch too large", ["--batch-size", "4096", "--seq-len", "4096"], "tokens in one micro-batch"),
    ("huge RL group", ["--objective", "rlp", "--param", "group_size=100000"], "rlp group_size must be at most 256"),
    # Structure of config files.
    ("config params a number", ["--config", "{params_number.yaml}"], "params must be a mapping"),
    ("config params a list", ["--config", "{params_list.yaml}"], "params must be a mapping"),
    ("config name a list", ["--config", "{name_list.yaml}"], "name must be text"),
    ("config after nested", ["--config", "{after_nested.yaml}"], "after must be a list of names"),
    ("config number as key", ["--config", "{number_key.yaml}"], "setting names must be text"),
    ("config nested param", ["--config", "{nested_param.yaml}"], "quiet-star n_ahead must be a whole number"),
    ("config boolean steps", ["--config", "{yes_steps.yaml}"], "max_steps must be a whole number (got True)"),
    ("config NaN lr", ["--config", "{nan_lr.yaml}"], "lr must be a finite number"),
    ("config is a FIFO", ["--config", "{fifo.txt}"], "is not a regular file"),
    # Odd files and data folders.
    ("corpus is a FIFO", ["--corpus", "{fifo.txt}"], "is not a regular file"),
    ("JSONL null text", ["--corpus", "{null_text.jsonl}"], "line 2: field 'text' holds null, not text"),
    ("JSONL number text", ["--corpus", "{number_text.jsonl}"], "field 'text' holds 42 (int), not text"),
    ("data folder is a file", ["--data-dir", "{a_file}"], "is a file, not a folder"),
    ("data folder below a file", ["--data-dir", "{a_file}/runs"], "cannot be created"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("bad"))


def _args(template: list[str], files: dict[str, str]) -> list[str]:
    out = []
    for a in template:
        for name, path in files.items():
            a = a.replace("{" + name + "}", path)
        out.append(a)
    if "--model" not in out:
        out = ["--model", "tiny-random"] + out
    return out


@pytest.mark.parametrize("case,args,message", CASES, ids=[c[0] for c in CASES])
def test_launch_validation_names_the_problem(case, args, message, files, data_dir):
    """The path the web form and the CLI share: parse + validate before any job exists."""
    with pytest.raises(LabError) as err:
        ns = build_parser().parse_args(["train", *_args(args, files), "--data-dir", str(data_dir)]
                                       if "--data-dir" not in args else ["train", *_args(args, files)])
        validate(config_from_args(ns), ns.data_dir)
    assert message in str(err.value), str(err.value)
    assert Store(data_dir).list_runs().empty


@pytest.mark.parametrize("case,args,message", [c for c in CASES if c[0] in (
    "folder without weights", "JSONL broken line", "negative learning rate", "config unknown key",
    "G = 1 for RLOO", "config params a number", "corpus is a FIFO", "infinite objective param")],
    ids=lambda c: c if isinstance(c, str) else None)
def test_cli_prints_the_message_and_exits_2(case, args, message, files, data_dir):
    r = lab_cli("train", *_args(args, files), data_dir=data_dir, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert Store(data_dir).list_runs().empty


def test_database_that_is_not_duckdb(data_dir):
    (data_dir / "lab.duckdb").write_text("hello, I am a text file\n" * 200)
    r = lab_cli("runs", data_dir=data_dir)
    assert r.returncode == 2 and "not a readable DuckDB database" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_run_ids(data_dir):
    for cmd in ("show", "resume", "cancel"):
        r = lab_cli(cmd, "20990101-000000-beef", data_dir=data_dir)
        assert r.returncode == 2 and "No run with id" in r.stderr


def test_the_web_form_shows_bad_input_as_an_error(files, data_dir, monkeypatch):
    from conftest import ROOT
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("THOUGHTLAB_DATA_DIR", str(data_dir))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("pages/launch.py").run()
    at.radio(key="f_corpus_kind").set_value("Path on the server").run()
    at.text_input(key="f_corpus_path").set_value(files["binary.txt"]).run()
    at.button[1].click().run()                                  # Launch
    assert any("looks binary" in e.value for e in at.error)
    assert not at.exception
    assert Store(data_dir).list_runs().empty


def test_names_are_printed_safely_one_line_per_run(data_dir):
    """Control characters in a run's name (an escape sequence that clears the screen, a
    newline, a carriage return, a bidi override) are shown escaped, never sent raw."""
    store = Store(data_dir).init()
    evil = "ok\x1b[2J\x1b]0;pwned\x07\nsecond line\rX\u202eevil\x9b"
    rid = store.create_run(config={"objective": "ntp", "name": evil})
    store.create_run(config={"objective": "ntp", "name": "plain"})
    store.update_run(rid, error="line one\nline two \x1b[31mred")
    listing = lab_cli("runs", data_dir=data_dir)
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert len(lines) == 2 and any(rid in line and "ok\\x1b[2J" in line for line in lines), lines
    shown = lab_cli("show", rid, data_dir=data_dir)
    assert shown.returncode == 0
    for out in (listing.stdout, shown.stdout):
        assert not any(ch in out for ch in "\x1b\x07\r\u202e\x9b"), repr(out)
    assert "name: ok\\x1b[2J\\x1b]0;pwned\\x07\\nsecond line\\rX\\u202eevil\\x9b\n" in shown.stdout
    assert "line one\nline two \\x1b[31mred" in shown.stdout       # an error keeps its lines


@pytest.mark.parametrize("args,message", [
    (["show", "x", "--lines", "0"], "--lines: must be between 1 and 100,000 (got 0)"),
    (["show", "x", "--lines", "-5"], "--lines: must be between 1 and 100,000 (got -5)"),
    (["show", "x", "--lines", "many"], "--lines: must be a whole number"),
    (["eval", "--benchmark", "math-test", "--limit", "-1"], "limit must be between 0 (all items)"),
    (["eval", "--benchmark", "math-test", "--batch-size", "0"], "batch_size must be between 1 and 1024"),
    (["eval", "--benchmark", "math-test", "--seed", "-1"], "seed must be between 0 and 4,294,967,295"),
    (["eval", "--benchmark", "math-test", "--seed", "99999999999"], "seed must be between 0 and"),
    (["eval", "--benchmark", "math-test", "--max-new-tokens", "99999"], "max_new_tokens must be between 0"),
    (["eval", "--benchmark", "math-test", "--limit", "10000000000000"], "limit must be between 0"),
])
def test_cli_numeric_options_have_ranges(args, message, data_dir):
    r = lab_cli(*args, "--model", "tiny-random", data_dir=data_dir) if args[0] == "eval" else \
        lab_cli(*args, data_dir=data_dir)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_uploads_are_truncated_never_overwrite_and_fail_with_a_message(tmp_path):
    from lab.corpora import save_upload
    data = tmp_path / "data"
    long = save_upload(data, "x" * 5000 + ".txt", b"a long name\n")   # was a raw OSError
    assert long.parent == (data / "uploads").resolve() and len(long.name) < 120
    first = save_upload(data, "corpus.txt", b"first corpus\n")
    second = save_upload(data, "corpus.txt", b"second corpus\n")
    assert first != second and first.read_bytes() == b"first corpus\n"   # the first run's corpus stays
    assert save_upload(data, "corpus.txt", b"first corpus\n") == first   # the same file is the same corpus
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "uploads").write_text("a file where the uploads folder goes")
    with pytest.raises(LabError, match="Could not store the upload corpus-"):
        save_upload(blocked, "corpus.txt", b"text\n")
