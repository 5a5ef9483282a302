import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lab import mathgen
from lab.corpora import (
    check_corpus,
    load_documents,
    pack,
    safe_upload_path,
    save_upload,
)
from lab.errors import LabError
from lab.models import smol_tokenizer


def test_builtin_generator_is_seeded_and_correct():
    a, b = mathgen.problems(50, "train", seed=3), mathgen.problems(50, "train", seed=3)
    assert [p.text for p in a] == [p.text for p in b]
    assert [p.text for p in a] != [p.text for p in mathgen.problems(50, "train", seed=4)]
    for p in a:
        assert p.solution.endswith(f"The answer is {p.answer}.")
    # Splits differ: test is disjoint from train, 'longer' has more steps, 'format' new wording.
    assert not {p.text for p in a} & {p.text for p in mathgen.problems(50, "test", seed=3)}
    longer = mathgen.problems(30, "longer")
    short = mathgen.problems(30, "train")
    assert sum(p.solution.count("=") for p in longer) > 1.5 * sum(p.solution.count("=") for p in short)
    assert all(p.question.startswith("How many") for p in mathgen.problems(10, "format"))


def test_text_jsonl_parquet_files(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nline two\n\nsecond doc\n")
    assert load_documents(str(tmp_path / "a.txt")) == ["first doc\nline two", "second doc"]
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "x y"}) + "\n\n" + json.dumps({"text": "z"}) + "\n")
    assert load_documents(str(tmp_path / "b.jsonl")) == ["x y", "z"]
    gsm = tmp_path / "g.jsonl"
    gsm.write_text(json.dumps({"question": "Q?", "answer": "2+2=<<2+2=4>>4\n#### 4"}) + "\n")
    assert load_documents(str(gsm)) == ["Problem: Q?\nSolution: 2+2=4\n#### 4"]
    pq.write_table(pa.table({"body": ["p1", "p2", None]}), tmp_path / "c.parquet")
    assert load_documents(str(tmp_path / "c.parquet"), text_field="body") == ["p1", "p2"]


@pytest.mark.parametrize("name,content,message", [
    ("empty.txt", b"", "is empty"),
    ("blank.txt", b"  \n\n ", "is empty"),
    ("bin.txt", b"\x00\x01\x02abc", "looks binary"),
    ("latin.txt", "café".encode("latin-1"), "not UTF-8"),
    ("bad.jsonl", b'{"text": "ok"}\n{broken\n', "line 2: not valid JSON"),
    ("nofield.jsonl", b'{"body": "x"}\n', "no text field 'text'"),
    ("list.jsonl", b'[1, 2]\n', "expected a JSON object"),
    ("bad.parquet", b"PAR1 not really", "not a readable Parquet"),
    ("data.csv", b"a,b\n", "unsupported type .csv"),
])
def test_broken_files_name_the_file_and_problem(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LabError, match=message) as e:
        check_corpus(str(path))
    assert name in str(e.value)


def test_huge_line_and_missing_file(tmp_path):
    p = tmp_path / "huge.txt"
    p.write_text("x" * 5_000_001)
    with pytest.raises(LabError, match="line of 5,000,001 characters"):
        load_documents(str(p))
    with pytest.raises(LabError, match="neither 'builtin'"):
        load_documents(str(tmp_path / "missing.txt.gz"))
    with pytest.raises(LabError, match="does not exist"):
        load_documents(str(tmp_path / "missing.txt"))


def test_pack_into_fixed_windows():
    tok = smol_tokenizer()
    docs = mathgen.documents(20)
    windows = pack(docs, tok, 64)
    total = sum(len(tok(d, add_special_tokens=False)["input_ids"]) + 1 for d in docs)
    assert windows.shape == (total // 64, 64)
    assert (windows == tok.eos_token_id).sum() >= len(docs) - 2  # documents separated by EOS
    with pytest.raises(LabError, match="fewer than one window"):
        pack(["hi"], tok, 64)


@pytest.mark.parametrize("name", ["../../etc/passwd.txt", "/abs/path/x.txt", "..\\..\\w.txt",
                                  "a/../../b.jsonl", ".hidden.txt", "ok name (1).txt"])
def test_uploads_stay_inside_data_folder(tmp_path, name):
    target = safe_upload_path(tmp_path, name)
    assert (tmp_path / "uploads").resolve() in target.parents
    assert "/" not in target.name and ".." not in target.name and not target.name.startswith(".")
    saved = save_upload(tmp_path, name, b"hello\n")
    assert saved.read_bytes() == b"hello\n"


def test_upload_type_is_checked(tmp_path):
    with pytest.raises(LabError, match="use a .txt"):
        safe_upload_path(tmp_path, "evil.sh")
