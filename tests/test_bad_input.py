"""Bad input, table-driven, through the CLI (as a subprocess, config files included) and the
launch validation the web form uses: each case names what is wrong and leaves no run behind."""
from __future__ import annotations

import json
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
        ns = build_parser().parse_args(["train", *_args(args, files), "--data-dir", str(data_dir)])
        validate(config_from_args(ns), data_dir)
    assert message in str(err.value), str(err.value)
    assert Store(data_dir).list_runs().empty


@pytest.mark.parametrize("case,args,message", [c for c in CASES if c[0] in (
    "folder without weights", "JSONL broken line", "negative learning rate", "config unknown key",
    "G = 1 for RLOO")], ids=lambda c: c if isinstance(c, str) else None)
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
