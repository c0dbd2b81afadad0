"""benchmarks/bench_fronts.py cannot rot: its equal-budget rule, and the whole script on the tiny
model (one seed, one step) down to its table, markdown and figure."""
import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from rl_helpers import write_prompts

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_fronts", REPO / "benchmarks" / "bench_fronts.py")
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_fronts"] = bench
spec.loader.exec_module(bench)

PIPELINE = """
experiment: tiny
train:
  model: {{name: {model}, lora_r: 4}}
  data: {{train: {data}}}
  sampling: {{num_generations: 2, prompts_per_step: 2, max_new_tokens: 4}}
  reward:
    objectives: {{good: {{type: word_share, word: good}}, bad: {{type: word_share, word: bad}}}}
  eval_objectives: {{rouge_l: {{}}}}
  algorithm: {{name: rloo, kl_coef: 0.0}}
  optim: {{steps: 10, lr: 0.05}}
  progress: false
searches: [{{strategy: grid}}]
report: {{enabled: false}}
"""


@pytest.fixture
def pipeline(tiny_llama, in_tmp) -> Path:
    path = in_tmp / "pipeline.yaml"
    path.write_text(PIPELINE.format(model=tiny_llama, data=write_prompts(in_tmp / "prompts.jsonl")))
    return path


def per_seed_steps(config) -> int:
    """Training steps one seed of a search may spend under its config (trained runs x steps)."""
    if config.strategy == "adaptive":
        return config.options["budget_steps"] // len(config.seeds)
    runs = {"grid": 5, "soups": 2, "mixing": 2, "conditioned": 1}[config.strategy]
    return runs * config.train.optim.steps


def test_every_method_gets_the_grids_budget_and_conditioned_half_of_it(pipeline, in_tmp):
    train = bench.load_train(pipeline, 6, 3, "sqlite:///x.db", "bench", in_tmp / "runs")
    assert train.sampling.max_new_tokens == 6 and train.data.max_eval_prompts == 3 and not train.eval_objectives
    configs = {c.strategy: c for c in bench.search_configs(train, steps=3, seeds=[0, 1])}
    assert list(configs) == ["soups", "conditioned", "grid", "adaptive", "mixing"]  # reusers after their sources
    B = 15
    assert {m: per_seed_steps(c) for m, c in configs.items()} == {
        "soups": 14, "mixing": 14, "grid": B, "adaptive": B, "conditioned": 7}  # B // 2 x 2 <= B; half of B
    assert configs["adaptive"].options == {"budget_steps": 30, "warm_steps": 3}
    # mixing must train exactly the soups' endpoints, or MLflow would not reuse them
    assert configs["mixing"].train == configs["soups"].train
    assert configs["adaptive"].train == configs["grid"].train
    assert train.optim.steps == 10  # the pipeline's config is left as it was


def test_the_script_writes_a_table_with_intervals_and_a_figure(pipeline, in_tmp):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only adds contention
    try:
        bench.main(["--pipeline", str(pipeline), "--steps", "1", "--seeds", "0", "--eval-prompts", "2",
                    "--max-new-tokens", "3", "--methods", "soups", "conditioned", "--n-bootstrap", "100",
                    "--out", str(in_tmp / "out")])
    finally:
        torch.set_num_threads(threads)
    table = pd.read_csv(in_tmp / "out" / "fronts.csv")
    assert table["method"].tolist() == ["soups", "conditioned"]
    by = table.set_index("method")
    # soups: 2 endpoints x (5 // 2) steps; conditioned: one run of half the budget, 5 // 2
    assert by["train steps"].to_dict() == {"soups": 4, "conditioned": 2}
    # base + 2 endpoints + 3 soups; conditioned: base + 5 weight vectors, its training run left out
    assert by["n policies"].to_dict() == {"soups": 6, "conditioned": 6}
    assert ((table["hv_ci_low"] <= table["hv"] + 1e-12) & (table["hv"] <= table["hv_ci_high"] + 1e-12)).all()
    md = (in_tmp / "out" / "fronts.md").read_text()
    assert "conditioned reaches the soups' hypervolume" in md and "--steps 1" in md
    assert (in_tmp / "out" / "hv_vs_cost.png").stat().st_size > 1000
