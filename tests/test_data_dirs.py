"""Data folders: checked once up front (a file, a folder that cannot be created), and a
read-only data folder that still works for reading (`lab runs`, `lab show`, the pages in a
read-only mode) without writing anything, not even the lock file.

Read-only folders are real: a read-only bind mount in a private mount namespace
(tests/sandbox.py), which holds for root too; without namespaces, and not as root, a folder
without write permission."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sandbox
from conftest import ROOT, lab_cli

from lab.store import Store


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def read_only_command(folder: Path, command: list[str]) -> list[str]:
    """`command` run with `folder` read-only: a read-only mount where namespaces are allowed,
    else (not as root) the folder's write permission removed; skips when neither is possible."""
    if sandbox.available():
        return sandbox.sandboxed(["ro", folder], command)
    if os.geteuid() == 0:
        pytest.skip("as root without mount namespaces no folder is read-only")
    for p in [folder, *folder.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    return command


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def lab(*args: str) -> list[str]:
    return [sys.executable, "-m", "lab", *args]


@pytest.fixture
def finished_run(data_dir: Path) -> str:
    """A data folder holding one finished run with rows and a log (written while writable)."""
    store = Store(data_dir).init()
    rid = store.create_run(config={"objective": "ntp", "name": "kept run", "max_steps": 2})
    store.append({"metrics": [{"run_id": rid, "step": s, "name": "loss", "value": 3.0 - s} for s in (1, 2)]},
                 run_update={"status": "finished", "step": 2}, run_id=rid)
    log = data_dir / "runs" / rid / "job.log"
    log.parent.mkdir(parents=True)
    log.write_text("[worker] finished\n")
    store.update_run(rid, log_path=str(log))
    return rid


@pytest.mark.parametrize("where,message", [
    ("a_file", "is a file, not a folder"),
    ("a_file/below", "does not exist and cannot be created (Not a directory)"),
])
def test_a_data_folder_that_cannot_be_one_is_refused_by_every_command(tmp_path, where, message):
    (tmp_path / "a_file").write_text("not a folder\n")
    for args in (["runs"], ["show", "x"], ["train", "--model", "tiny-random"], ["resume", "x"]):
        r = lab_cli(*args, data_dir=tmp_path / where, timeout=120)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_read_only_data_folder_lists_and_shows_runs_and_writes_nothing(data_dir, finished_run):
    before = snapshot(data_dir)
    script = ("import json, subprocess, sys\n"
              "out = {}\n"
              "for name, args in json.loads(sys.argv[1]).items():\n"
              "    r = subprocess.run([sys.executable, '-m', 'lab', *args], capture_output=True, text=True)\n"
              "    out[name] = [r.returncode, r.stdout, r.stderr]\n"
              "print(json.dumps(out))\n")
    d = str(data_dir)
    commands = {"runs": ["runs", "--data-dir", d], "show": ["show", finished_run, "--data-dir", d],
                "train": ["train", "--model", "tiny-random", "--data-dir", d],
                "resume": ["resume", finished_run, "--data-dir", d],
                "cancel": ["cancel", finished_run, "--data-dir", d]}
    r = run(read_only_command(data_dir, [sys.executable, "-c", script, json.dumps(commands)]))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["runs"][0] == 0 and finished_run in out["runs"][1] and "kept run" in out["runs"][1], out["runs"]
    assert out["show"][0] == 0 and "finished" in out["show"][1] and "[worker] finished" in out["show"][1]
    for name in ("train", "resume", "cancel"):
        rc, _, err = out[name]
        assert rc == 2 and f"The data folder {data_dir} is read-only" in err and "Traceback" not in err, err
    assert snapshot(data_dir) == before


def test_an_empty_read_only_folder_reads_as_no_runs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run(read_only_command(empty, lab("runs", "--data-dir", str(empty))))
    assert r.returncode == 0 and r.stdout.strip() == "no runs yet", r.stdout + r.stderr
    assert not list(empty.iterdir())        # no database, no lock file created


PAGES_SCRIPT = r"""
import json, os, sys
from streamlit.testing.v1 import AppTest
os.environ["THOUGHTLAB_DATA_DIR"] = sys.argv[1]
out = {}
for page in ("pages/launch.py", "pages/runs.py", "pages/forking.py", "pages/thoughts.py", "pages/heatmap.py",
             "pages/playground.py", "pages/benchmarks.py", "pages/nt_accuracy.py"):
    at = AppTest.from_file("app.py", default_timeout=120)
    at.switch_page(page)
    at.run()
    out[page] = {"exceptions": [e.value for e in at.exception], "errors": [e.value for e in at.error],
                 "warnings": [w.value for w in at.warning],
                 "buttons": {b.label: b.disabled for b in at.button}}
print(json.dumps(out))
"""


def test_the_pages_of_a_read_only_folder_show_runs_with_a_banner_and_no_actions(data_dir, finished_run):
    before = snapshot(data_dir)
    r = run(read_only_command(data_dir, [sys.executable, "-c", PAGES_SCRIPT, str(data_dir)]))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    for page, seen in out.items():
        assert not seen["exceptions"] and not seen["errors"], (page, seen)
    for page in ("pages/launch.py", "pages/runs.py"):    # the pages with actions say why they are off
        assert any("is read-only" in w for w in out[page]["warnings"]), (page, out[page]["warnings"])
    assert out["pages/launch.py"]["buttons"]["Launch"] is True
    runs = out["pages/runs.py"]["buttons"]
    assert runs["Resume from last checkpoint"] is True and runs["Delete permanently"] is True, runs
    assert runs["Save"] is True
    assert snapshot(data_dir) == before
