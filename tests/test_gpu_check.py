"""benchmarks/gpu_check.sh runs where no one can watch it (a GPU machine without network): its
tiny mode runs the same benchmark code on CPU here, so it cannot rot unnoticed."""
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def test_tiny_mode_runs_the_benchmark_with_tiny(tmp_path):
    echo = tmp_path / "python"  # stands in for Python: prints what the script would run
    echo.write_text("#!/bin/sh\necho \"$@\"\n")
    echo.chmod(0o755)
    env = {**os.environ, "PYTHON": str(echo)}
    by_flag = subprocess.run(["bash", str(SCRIPT), "--tiny", "--skip-trl"], env=env, capture_output=True, text=True)
    env["MOALIGN_GPU_CHECK_TINY"] = "1"
    by_env = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert by_flag.returncode == 0 and by_env.returncode == 0, by_flag.stderr + by_env.stderr
    assert by_flag.stdout.split() == [str(REPO / "benchmarks" / "bench_gpu_step.py"), "--tiny", "--skip-trl"]
    assert by_env.stdout.split() == [str(REPO / "benchmarks" / "bench_gpu_step.py"), "--tiny"]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu_step", REPO / "benchmarks" / "bench_gpu_step.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_tiny_benchmark_times_generation_and_moalign(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "gpu_check.json"
    assert _bench().main(["--tiny", "--skip-trl", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    # every completion ran to max_new_tokens (EOS is outside the vocabulary: asserted inside), on both paths
    assert [g["path"] for g in result["generate"]] == ["shared prompt, dynamic cache", "plain, dynamic cache"]
    assert all(g["tokens_per_s"] > 0 and 0 < g["bandwidth_fraction"] < 1 for g in result["generate"])
    assert result["moalign"]["step"] > 0 and result["moalign"]["generate_tokens_per_s"] > 0
    assert "trl" not in result


@pytest.mark.slow  # TRL's import and trainer set-up alone take ~10 s
def test_tiny_trl_comparison_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bench = _bench()
    path, _ = bench.build_model("tiny", tmp_path / "model", "cpu", torch.float32)
    assert bench.run_trl(path, bench.SHAPES["tiny"], 2, tmp_path, "cpu") > 0
