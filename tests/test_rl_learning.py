"""Learning happens, the KL anchor holds, and weights steer (tiny Llama, CPU, fixed seeds)."""
import pytest

import moalign
from moalign.rl.config import AlgorithmConfig, OptimConfig, RewardConfig

from rl_helpers import tiny_config, write_prompts


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_prompts(tmp_path_factory.mktemp("data") / "prompts.jsonl")


@pytest.mark.parametrize("algorithm", ["reinforce", "rloo", "grpo"])
def test_reward_for_a_token_rises(algorithm, tiny_llama, data, tmp_path):
    result = moalign.train(tiny_config(tiny_llama, data, tmp_path, algorithm=AlgorithmConfig(name=algorithm, kl_coef=0.0)))
    good = result.history["rewards/good/mean"].to_numpy()
    # a random policy says "good" ~1/70 of the time; learning makes it most of the words
    assert good[:5].mean() < 0.1
    assert good[-5:].mean() > 0.4
    assert result.eval_scores["good"] > 0.4


def test_grpo_with_clipped_inner_epochs_learns(tiny_llama, data, tmp_path):
    config = tiny_config(tiny_llama, data, tmp_path, optim=OptimConfig(steps=20, lr=2e-2),
                         algorithm=AlgorithmConfig(name="grpo", kl_coef=0.0, inner_epochs=2, clip_eps=0.2))
    history = moalign.train(config).history
    assert history["rewards/good/mean"].tail(5).mean() > history["rewards/good/mean"].head(5).mean() + 0.2
    assert (history["clip_frac"] > 0).any()  # the second pass moves ratios past the clip range


@pytest.fixture(scope="module")
def free_kl(tiny_llama, data, tmp_path_factory):
    """Per-token KL a 30-step run reaches with no anchor."""
    config = tiny_config(tiny_llama, data, tmp_path_factory.mktemp("free"), optim=OptimConfig(steps=30, lr=1e-2),
                         algorithm=AlgorithmConfig(kl_coef=0.0))
    return moalign.train(config).history["kl"].tail(5).mean()


@pytest.mark.parametrize("estimator,in_reward", [("k3", False), ("k1", False), ("k1", True)])
def test_large_kl_coef_keeps_kl_low(estimator, in_reward, tiny_llama, data, tmp_path, free_kl):
    """Against a reward that pulls away, the anchor holds (tests/test_rl_kl.py checks the gradients)."""
    optim = OptimConfig(steps=30, lr=1e-2)
    anchored = moalign.train(tiny_config(tiny_llama, data, tmp_path / "anchored", optim=optim,
                                         algorithm=AlgorithmConfig(kl_coef=5.0, kl_estimator=estimator, kl_in_reward=in_reward)))
    kl_anchored = anchored.history["kl"].tail(5).mean()
    assert free_kl > 0.5
    assert kl_anchored < 0.3 * free_kl


def test_adaptive_kl_controller_raises_the_coefficient_when_kl_overshoots(tiny_llama, data, tmp_path):
    config = tiny_config(tiny_llama, data, tmp_path, optim=OptimConfig(steps=15, lr=2e-2),
                         algorithm=AlgorithmConfig(kl_coef=0.01, target_kl=0.01, kl_horizon=2))
    coef = moalign.train(config).history["kl_coef"].to_numpy()
    assert coef[-1] > coef[0] * 2


def test_weights_steer_between_conflicting_objectives(tiny_llama, data, tmp_path):
    objectives = {"good": {"type": "word_share", "word": "good"}, "bad": {"type": "word_share", "word": "bad"}}
    ends = {}
    for weights in ([1.0, 0.0], [0.0, 1.0]):
        config = tiny_config(tiny_llama, data, tmp_path / str(weights[0]),
                             reward=RewardConfig(objectives=objectives, weights=weights))
        ends[weights[0]] = moalign.train(config).eval_scores
    assert ends[1.0]["good"] > 0.4 > ends[1.0]["bad"]
    assert ends[0.0]["bad"] > 0.4 > ends[0.0]["good"]
