"""Safe defaults: localhost binding, no shell, parameterised SQL, uploads confined,
trust_remote_code off by default, safetensors-only checkpoints."""
from __future__ import annotations

import ast
import json
import re
import shutil
import tomllib
import urllib.request

import pytest
from browser import lab_server
from conftest import ROOT

from lab.config import RunConfig
from lab.errors import LabError
from lab.models import check_model_spec, load_model

SOURCES = [p for d in ("lab", "jobs", "pages") for p in (ROOT / d).rglob("*.py")] + [ROOT / "app.py"]


def test_server_listens_on_localhost_by_default(tmp_path):
    conf = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert conf["server"]["address"] == "127.0.0.1"
    assert re.search(r"^HOST\s*\?=\s*127\.0\.0\.1", (ROOT / "Makefile").read_text(), re.M)
    with lab_server(tmp_path, explicit_address=False) as url:
        assert urllib.request.urlopen(url + "/_stcore/health", timeout=5).status == 200
        port = int(url.rsplit(":", 1)[1])
        # The kernel's table of listening sockets: bound to 127.0.0.1 only (0100007F), not 0.0.0.0.
        bound = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in open(table).read().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hexport = local.split(":")
                if state == "0A" and int(hexport, 16) == port:
                    bound.add(addr)
        assert bound == {"0100007F"}, bound


def test_no_process_is_started_through_a_shell():
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "shell":
                assert isinstance(node.value, ast.Constant) and node.value.value is False, path
            if isinstance(node, ast.Attribute) and node.attr in ("system", "popen") and \
                    getattr(node.value, "id", "") == "os":
                pytest.fail(f"os.{node.attr} in {path}")


def test_sql_is_built_only_from_code_constants():
    """f-strings in execute/query may only interpolate names chosen by our code (table or
    column names from fixed lists, '?' placeholders), never values."""
    allowed = {"cols", "marks", "table", "agg", "sql", "stmt", "c", "where"}
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("execute", "query") \
                    and node.args and isinstance(node.args[0], ast.JoinedStr):
                for part in node.args[0].values:
                    if isinstance(part, ast.FormattedValue):
                        names = {n.id for n in ast.walk(part.value) if isinstance(n, ast.Name)}
                        assert names <= allowed | {"TABLE_COLUMNS", "join"}, (path, node.lineno, names)


def test_trust_remote_code_is_off_unless_asked(tmp_path):
    assert RunConfig().trust_remote_code is False
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "my_secret_arch", "architectures": ["MyForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_my.MyConfig",
                     "AutoModelForCausalLM": "modeling_my.MyForCausalLM"}}))
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "configuration_my.py").write_text("raise SystemExit('remote code ran!')\n")
    with pytest.raises(LabError) as e:
        check_model_spec(str(folder))
    assert "trust_remote_code" in str(e.value) or "could not be read" in str(e.value)


def test_run_checkpoints_load_only_safetensors(tmp_path):
    from lab.checkpoint import checkpoint_dir_for
    lm = load_model("tiny-random")
    ck = checkpoint_dir_for(tmp_path, "r1", 2)
    import torch
    ck.mkdir(parents=True)
    lm.model.config.save_pretrained(ck)
    torch.save(lm.model.state_dict(), ck / "pytorch_model.bin")   # a pickle checkpoint
    lm.tokenizer.save_pretrained(ck)
    (ck / "COMPLETE").write_text("2")
    assert not list(ck.glob("*.safetensors"))
    with pytest.raises(LabError):
        load_model("run:r1", tmp_path)
    shutil.rmtree(ck)
