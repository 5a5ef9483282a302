"""Smoke tests of the benchmark scripts at tiny sizes: they run end to end and report what they
measured (the figures themselves go in docs/benchmarks.md, not in assertions)."""
import json
import subprocess
import sys

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
