"""The KL anchor, checked where it matters: the gradients each estimator gives where it is placed.

Exact expectations over a small categorical policy (no sampling noise) check the table in
`moalign/rl/kl.py`; short trainings under a constant reward check that every accepted combination
keeps the policy at the reference, and that the old k1-in-the-loss did not.
"""
import numpy as np
import pytest
import torch

import moalign
from moalign import ConfigError
from moalign.rl import kl as kl_module
from moalign.rl.config import AlgorithmConfig, OptimConfig, RewardConfig
from moalign.rl.kl import ANCHORS, check_anchor, kl_loss_term, kl_per_token

from rl_helpers import tiny_config, write_prompts

V = 6


def expected_gradients(theta: torch.Tensor, ref: torch.Tensor) -> dict:
    """Expected gradient of each (estimator, placement) at a categorical policy softmax(theta).

    Tokens are drawn from pi, which the update treats as fixed (the samples are given), so the
    expectation weighs each token's gradient by pi(a).detach(). In the loss the KL term itself is
    differentiated; in the reward it is a number scaling grad log pi (REINFORCE).
    """
    theta = theta.clone().requires_grad_(True)
    logpi = torch.log_softmax(theta, -1)
    pi = logpi.exp().detach()
    out = {}
    for est in ("k1", "k2", "k3"):
        terms = {
            ("loss", est): (pi * kl_loss_term(logpi, ref, est)).sum(),
            ("reward", est): (pi * kl_per_token(logpi, ref, est).detach() * logpi).sum(),
            ("raw loss", est): (pi * kl_per_token(logpi, ref, est)).sum(),
        }
        for key, value in terms.items():
            out[key] = torch.autograd.grad(value, theta, retain_graph=True)[0]
    p = logpi.exp()
    out["grad KL(pi || ref)"] = torch.autograd.grad((p * (logpi - ref)).sum(), theta, retain_graph=True)[0]
    out["grad KL(ref || pi)"] = torch.autograd.grad((ref.exp() * (ref - logpi)).sum(), theta)[0]
    return out


def random_point(seed: int):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(V, generator=g, dtype=torch.float64) * 2
    ref = torch.log_softmax(torch.randn(V, generator=g, dtype=torch.float64) * 2, -1)
    return theta, ref


@pytest.mark.parametrize("seed", range(5))
def test_each_accepted_combination_follows_the_gradient_of_the_divergence_it_claims(seed):
    g = expected_gradients(*random_point(seed))
    reverse, forward = g["grad KL(pi || ref)"], g["grad KL(ref || pi)"]
    torch.testing.assert_close(g[("loss", "k1")], reverse)  # the score-function surrogate
    torch.testing.assert_close(g[("loss", "k2")], reverse)
    torch.testing.assert_close(g[("loss", "k3")], forward)  # GRPO's: the forward KL
    torch.testing.assert_close(g[("reward", "k1")], reverse)
    assert set(ANCHORS) == {("k1", False), ("k2", False), ("k3", False), ("k1", True)}


def test_k1_differentiated_as_it_is_has_zero_expected_gradient():
    """The defect: kl_coef * (logp - ref) in the loss has E[grad] = E[grad log pi] = 0, no pull."""
    g = expected_gradients(*random_point(0))
    torch.testing.assert_close(g[("raw loss", "k1")], torch.zeros(V, dtype=torch.float64))
    assert g["grad KL(pi || ref)"].abs().max() > 0.1


@pytest.mark.parametrize("estimator", ["k2", "k3"])
def test_k2_k3_in_the_reward_do_not_anchor_and_are_refused(estimator):
    # E[k3 grad log pi] = grad KL(pi||ref) - grad KL(ref||pi): at many policies it points *away*
    # from the reference (a negative inner product with the reverse KL's gradient).
    away = 0
    for seed in range(50):
        g = expected_gradients(*random_point(seed))
        away += float(g[("reward", estimator)] @ g["grad KL(pi || ref)"]) < 0
    assert away >= 3
    with pytest.raises(ConfigError, match=f"kl_estimator '{estimator}' with kl_in_reward: true does not anchor"):
        AlgorithmConfig(kl_estimator=estimator, kl_in_reward=True)
    with pytest.raises(ConfigError, match="kl_estimator must be one of k1|k2|k3"):
        check_anchor("k4", False)


def test_estimator_values_by_hand():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    # log r = ref - logp = [-0.5, 1.0]
    torch.testing.assert_close(kl_per_token(logp, ref, "k1"), torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(kl_per_token(logp, ref, "k2"), torch.tensor([0.125, 0.5]))
    torch.testing.assert_close(kl_per_token(logp, ref, "k3"), torch.tensor([np.exp(-0.5) - 1 + 0.5, np.e - 1 - 1.0], dtype=torch.float32),
                               rtol=1e-6, atol=1e-6)
    term = kl_loss_term(logp, ref, "k1")  # the surrogate keeps k1's value, so logs read the same
    torch.testing.assert_close(term, torch.tensor([0.5, -1.0]))


def constant_reward_kl(tiny_llama, data, tmp_path, estimator, in_reward, steps=30):
    config = tiny_config(tiny_llama, data, tmp_path, reward=RewardConfig(objectives={"c": {"type": "constant"}}),
                         optim=OptimConfig(steps=steps, lr=2e-2),
                         algorithm=AlgorithmConfig(name="rloo", kl_coef=2.0, kl_estimator=estimator, kl_in_reward=in_reward))
    return moalign.train(config).history


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_prompts(tmp_path_factory.mktemp("kl") / "prompts.jsonl")


@pytest.mark.parametrize("estimator,in_reward", sorted(ANCHORS), ids=lambda v: str(v))
def test_constant_reward_keeps_every_accepted_combination_at_the_reference(estimator, in_reward, tiny_llama, data, tmp_path):
    history = constant_reward_kl(tiny_llama, data, tmp_path, estimator, in_reward)
    # "kl" is logged with the configured estimator; k1's value is unbiased but can be negative.
    assert history["kl"].abs().tail(5).mean() < 0.01, history["kl"].tail(5).tolist()


def test_the_old_k1_in_the_loss_drifts_under_a_constant_reward(tiny_llama, data, tmp_path, monkeypatch):
    """What the surrogate fixes: differentiating k1 itself (the old code) gives a gradient that is
    zero in expectation, pure noise of size kl_coef, and the policy walks away from the reference."""
    monkeypatch.setattr("moalign.rl.trainer.kl_loss_term", kl_module.kl_per_token)
    old = constant_reward_kl(tiny_llama, data, tmp_path, "k1", False)
    assert old["kl"].tail(5).mean() > 0.1, old["kl"].tail(5).tolist()
