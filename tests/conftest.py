"""Shared fixtures: real DuckDB files in temp folders, real subprocesses, tiny real models."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
ARTIFACTS = ROOT / "test-artifacts"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A small, fast job: tiny-random on the built-in corpus.
TINY = ["--model", "tiny-random", "--corpus", "builtin", "--corpus-docs", "60", "--seq-len", "32",
        "--batch-size", "2", "--sample-every", "2", "--n-samples", "1"]


def logits_capture(inner, captured: dict):
    """`inner` wrapped so a test sees the logits of its last forward (with their gradient) and
    the input ids it was given, in `captured`."""
    import torch

    class Capture(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, **kw):
            out = self.inner(**kw)
            out.logits.retain_grad()
            captured.update(logits=out.logits, ids=kw.get("input_ids"))
            return out
    return Capture()


def tiny_config(**overrides):
    """A RunConfig for a fast tiny-random NTP job; tests override what they exercise."""
    from lab.config import RunConfig
    base = dict(objective="ntp", model="tiny-random", corpus="builtin", corpus_docs=60, seq_len=32,
                batch_size=2, max_steps=6, lr=1e-3, sample_every=2, n_samples=1, checkpoint_every=0)
    return RunConfig.from_dict({**base, **overrides})


def job_ended(store, run_id: str) -> bool:
    """True once the run is no longer queued/running (reaping dead jobs first, as pages do)."""
    from jobs.manager import reap
    reap(store.data_dir)
    return store.get_run(run_id)["status"] not in ("queued", "running")


def app_page(path: str, data_dir, monkeypatch, *, timeout: float = 120, **query):
    """Run the app headless (AppTest) on `path`, through app.py's navigation as a browser
    would, with the given data folder and query parameters."""
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("THOUGHTLAB_DATA_DIR", str(data_dir))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(path)
    return at.run()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


def lab_cli(*args: str, data_dir: Path | None = None, timeout: float = 300,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m lab ...` as a user would."""
    cmd = [sys.executable, "-m", "lab", *args]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)
