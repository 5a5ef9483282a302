"""Settings explain themselves: every RunConfig field carries help text that `--help`, the
Launch form and the README's table all show; presets have short typeable ids."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT

from lab.cli import build_parser
from lab.config import PRESET_TITLES, PRESETS, RunConfig, settings_help, settings_table
from lab.runlog import step_line


def test_every_run_setting_has_help_text():
    helps = settings_help(RunConfig)
    missing = [name for name, h in helps.items() if len(h["help"]) < 10]
    assert missing == []
    assert helps["seq_len"]["advanced"] is False and helps["weight_decay"]["advanced"] is True


def test_train_help_explains_every_flag():
    out = subprocess.run([sys.executable, "-m", "lab", "train", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60).stdout
    text = " ".join(out.split())       # argparse wraps lines
    for name, h in settings_help(RunConfig).items():
        if name == "params":
            continue
        assert "--" + name.replace("_", "-") in text
        assert " ".join(h["help"].split())[:40] in text, name
    assert "quick-cpu = quick CPU demo" in text


def test_presets_have_short_ids_that_the_cli_takes():
    assert set(PRESET_TITLES) == set(PRESETS)
    for pid in PRESETS:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", pid), pid
        args = build_parser().parse_args(["train", "--preset", pid])
        assert args.preset == pid


def test_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- settings:start -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert block == settings_table(), "regenerate it: python -m lab settings"


def test_objective_settings_with_help_are_documented_in_the_table():
    table = settings_table()
    assert "| `rpt` `entropy_threshold` | `1.0` | Train only at positions" in table
    assert "| `rlp` `group_size` | `4` | G: thoughts sampled per position" in table


def test_log_every_prints_a_line_per_step(capsys):
    from lab.runlog import RunLogger

    class NoStore:
        pass
    log = RunLogger(NoStore(), "r", enabled=True, print_every=2, max_steps=10)
    for step in (1, 2, 3, 4):
        log.metrics(step, {"loss": 2.0 / step, "step_time_s": 1.5}, wall_time=0.0, flops=0.0)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [step_line(2, 10, {"loss": 1.0, "step_time_s": 1.5}),
                     step_line(4, 10, {"loss": 0.5, "step_time_s": 1.5})]
    assert lines[0] == "[train] step 2/10 · loss 1.0000 · 1.50 s/step"
