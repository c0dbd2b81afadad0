"""benchmarks/bench_fronts.py cannot rot: its paired differences and matched-length gain on known
numbers, and the whole script on searches of the tiny model down to its tables and figure."""
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from moalign.pareto.config import SearchConfig
from moalign.pareto.search import run_search
from moalign.rl.config import RewardConfig, SamplingConfig, SupervisedConfig, TrackingConfig

from rl_helpers import tiny_config, write_prompts

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_fronts", REPO / "benchmarks" / "bench_fronts.py")
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_fronts"] = bench
spec.loader.exec_module(bench)


def fake_search(X: np.ndarray, objectives: list[str]):
    return SimpleNamespace(scores=SimpleNamespace(X=X, objectives=objectives))


def test_paired_differences_are_the_mean_difference_with_an_interval_around_it():
    rng = np.random.default_rng(0)
    base = np.broadcast_to(rng.normal(50, 5, size=(1, 1, 60, 1)), (1, 3, 60, 1))  # one run stands for every seed
    better = base + 2.0 + rng.normal(0, 1, size=(1, 3, 60, 1))  # +2 on every prompt, seed noise
    X = np.concatenate([base, better])
    out = bench.paired(fake_search(X, ["q"]), ["q"], base=0, n_boot=500)
    d, low, high = out[1]["q"]
    assert d == pytest.approx(np.mean(better - base)) and low < d < high and low > 1.5 and high < 2.5
    assert out[0]["q"] == (0.0, 0.0, 0.0)  # the base against itself


def test_the_gain_at_matched_length_removes_what_length_buys():
    """Quality = 0.5 x length + noise; the policy is 6 words longer on average and 1 point better at
    equal length: its raw gain is about 4, its gain at matched length about 1."""
    rng = np.random.default_rng(2)
    n = 200
    length_base = rng.uniform(10, 30, n)
    length_pol = length_base + rng.normal(6, 5, n)
    q_base = 0.5 * length_base + rng.normal(0, 0.5, n)
    q_pol = 0.5 * length_pol + 1.0 + rng.normal(0, 0.5, n)
    X = np.stack([np.column_stack([q_base, length_base]), np.column_stack([q_pol, length_pol])])[:, None]  # [P, K=1, N, M]
    search = fake_search(X, ["q", "words"])
    raw = bench.paired(search, ["q"], 0, 300)[1]["q"][0]
    gain, low, high = bench.length_adjusted(search, "q", "words", 0, 300)[1]
    assert raw == pytest.approx(4.0, abs=0.5)
    assert gain == pytest.approx(1.0, abs=0.3) and low < 1.0 < high


def test_the_script_tabulates_fronts_costs_and_quality_with_intervals(tiny_llama, tmp_path, one_torch_thread):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_config(tiny_llama, write_prompts(tmp_path / "p.jsonl"), tmp_path,
                      reward=RewardConfig(objectives={"chrf": {}, "verbosity": {"unit": "words"}},
                                          constraints=["verbosity <= 7"]),
                      sampling=SamplingConfig(num_generations=2, prompts_per_step=2, max_new_tokens=6),
                      supervised=SupervisedConfig(epochs=1, batch_size=4, lr=0.02),
                      tracking=TrackingConfig(tracking_uri=uri, experiment="bench"))
    cfg.eval_objectives = {"rouge_l": {}, "density": {}}
    cfg.optim.steps = 1
    for strategy in ("best_of_n", "rejection"):
        run_search(SearchConfig(train=cfg, strategy=strategy, weights=[[1, 0], [0, 1]], name=strategy, n_bootstrap=100,
                                options={"n": 2}))
    out = tmp_path / "out"
    assert bench.main(["--experiment", "bench", "--tracking-uri", uri, "--quality", "chrf", "--unseen", "rouge_l",
                       "--n-bootstrap", "100", "--out", str(out)]) == 0
    fronts = pd.read_csv(out / "fronts.csv").set_index("search")
    assert fronts.loc["best_of_n", "strategy"] == "best_of_n (oracle ceiling)"  # chrF reads the references
    assert fronts.loc["rejection", "strategy"] == "rejection"  # references as training data: no oracle
    assert fronts.loc["rejection", "tokens trained (fwd+bwd)"] > 0 and fronts.loc["best_of_n", "tokens trained (fwd+bwd)"] == 0
    assert (fronts["tokens generated"] > 0).all()
    quality = pd.read_csv(out / "quality.csv")
    assert len(quality) == 4 and set(quality["search"]) == {"best_of_n (oracle)", "rejection"}
    assert quality["primary"].sum() == 2  # the all-on-chrF policy of each search, named before looking
    assert quality["chrf vs base"].str.match(r"^[+-]\d+\.\d+ \[[+-]\d+\.\d+, [+-]\d+\.\d+\]").all()
    text = (out / "fronts.md").read_text()
    assert "Pre-named comparison" in text and "spans length" in text or "no span" in text
    assert (out / "hv_vs_cost.png").stat().st_size > 10_000
