"""Smoke tests of the benchmark scripts at tiny sizes: they run end to end and report what they
measured (the figures themselves go in docs/benchmarks.md, not in assertions)."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT


def test_cost_benchmark_compares_precisions_with_phases(tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"rlp": {"group_size": 2, "max_thought_tokens": 3}}))
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.benchmark", "--models", "tiny-random", "--objectives", "ntp,rlp",
         "--precision", "fp32,bf16", "--steps", "1", "--warmup", "0", "--batch", "1", "--seq-len", "16",
         "--corpus-docs", "40", "--params-json", str(params), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [(m["precision"], m["resolved_precision"]) for m in result["models"]] == [("fp32", "no"),
                                                                                  ("bf16", "bf16")]
    for entry in result["models"]:
        cases = {c["case"]: c for c in entry["cases"]}
        assert set(cases) == {"ntp", "rlp"} and "error" not in cases["rlp"]
        rlp = cases["rlp"]
        parts = rlp["step_fn_s"] + rlp["backward_s"] + rlp["optimizer_s"]
        assert 0 < parts <= rlp["step_time_s"] * 1.001
        assert rlp["phases_s"]["rl.sample"] > 0 and rlp["phases_s"]["rl.policy_fwd"] > 0
        assert 0 < rlp["generated_tokens"] <= 2 * 3       # G rollouts of at most 3 tokens
        assert rlp["time_ratio"] > 0 and rlp["flops_ratio"] > 1
    assert "Precision comparison, tiny-random" in proc.stdout and "| rlp |" in proc.stdout


def test_gpu_check_plan_commands_all_parse(tmp_path):
    """Every step of the GPU check (and its dry run) is a command the lab accepts."""
    import argparse

    from bench import benchmark, gpu_check, throughput
    from lab.cli import build_parser, config_from_args
    for dry, gpus in ((True, 0), (False, 2)):
        args = argparse.Namespace(dry_run=dry, gpus=gpus, only=None, peak_tflops=989.0)
        steps = gpu_check.plan(args, tmp_path)
        names = [name for name, _, _ in steps]
        assert names[:3] == ["ntp-mfu", "cost", "throughput"] and names[-1] == "eval-csqa"
        assert [n for n in names if n.startswith("train-")] == \
            ["train-ntp", "train-quiet-star", "train-rlp", "train-rpt"] + (["train-multi-gpu"] if gpus else [])
        for name, cmd, _ in steps:
            module, rest = cmd[2], cmd[3:]
            if module == "bench.benchmark":
                benchmark.parse_args(rest)
            elif module == "bench.throughput":
                throughput.parse_args(rest)
            else:
                parsed = build_parser().parse_args(rest)
                if rest[0] == "train":
                    cfg = config_from_args(parsed).validate()
                    assert cfg.model == ("tiny-random" if dry else "smollm2-135m")


@pytest.mark.timeout(900)
def test_gpu_check_dry_run_writes_its_summary(tmp_path):
    """A real training job through the job system and a real evaluation, as the GPU check
    runs them (the benchmark steps are covered by the plan test and the smoke test above)."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", str(out), "--dry-run",
                           "--only", "train-ntp,eval-csqa"],
                          cwd=ROOT, capture_output=True, text=True, timeout=880)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["train-ntp", "eval-csqa"]
    assert all(s["status"] == "ok" for s in summary["steps"]), (summary, proc.stderr[-2000:])
    assert proc.returncode == 0
    assert (out / "data" / "lab.duckdb").exists() and (out / "logs" / "train-ntp.log").exists()
    assert "| eval-csqa | ok |" in (out / "summary.md").read_text()
