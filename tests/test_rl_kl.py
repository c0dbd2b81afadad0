"""The KL anchor, checked where it matters: the gradients each estimator gives where it is placed.

Exact expectations over a small categorical policy (no sampling noise) check the table in
`moalign/rl/kl.py`. Short trainings check it where it matters: from a policy first moved away by a
real reward (at the reference every estimator's gradient is 0, so a test there cannot fail), every
accepted combination under a constant reward brings the exact KL down against a kl_coef 0 control,
and the old k1-in-the-loss does not.
"""
import numpy as np
import pytest
import torch

import moalign
from moalign import ConfigError
from moalign.rl import kl as kl_module
from moalign.rl.config import AlgorithmConfig, OptimConfig, RewardConfig
from moalign.rl.kl import ANCHORS, check_anchor, kl_loss_term, kl_per_token

from rl_helpers import PROMPTS, tiny_config, write_prompts

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


def exact_kl_to_reference(adapter, tiny_llama, prompts, samples: int = 4) -> float:
    """Mean per-token KL(pi || ref), summed over the vocabulary exactly, at the positions of
    completions the policy samples: how far the adapter has moved the policy."""
    from moalign.rl.config import ModelConfig
    from moalign.rl.kl import exact_kl
    from moalign.rl.policy import Policy
    from moalign.rl.sampling import generate

    policy = Policy(ModelConfig(name=tiny_llama, lora_r=8), adapter_dir=str(adapter))
    policy.model.eval()
    rollout = generate(policy.model, policy.tokenizer, prompts, samples, 8, 1.0, use_chat_template=True, seed=0)
    T = rollout.n_completion
    positions = (rollout.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        args = dict(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask, position_ids=positions)
        logits = policy.model(**args).logits[:, -T - 1:-1]
        with policy.as_reference() as reference:
            ref = reference(**args).logits[:, -T - 1:-1]
    mask = rollout.completion_mask.float()
    return float((exact_kl(logits, ref) * mask).sum() / mask.sum())


def train_from(tiny_llama, data, tmp_path, objective: dict, init=None, steps=20, **algorithm):
    config = tiny_config(tiny_llama, data, tmp_path, reward=RewardConfig(objectives={"r": objective}),
                         optim=OptimConfig(steps=steps, lr=2e-2), algorithm=AlgorithmConfig(name="rloo", **algorithm))
    config.model.init_adapter = None if init is None else str(init)
    return moalign.train(config)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_prompts(tmp_path_factory.mktemp("kl") / "prompts.jsonl")


@pytest.fixture(scope="module")
def moved(tiny_llama, data, tmp_path_factory, one_torch_thread):
    """A policy first moved away from the reference by a real reward (no anchor), where every
    estimator's gradient is not 0, and the KL it starts the anchored runs from."""
    adapter = train_from(tiny_llama, data, tmp_path_factory.mktemp("moved"), {"type": "word_share"}, steps=25,
                         kl_coef=0.0).adapter_dir
    return adapter, exact_kl_to_reference(adapter, tiny_llama, PROMPTS)


@pytest.fixture(scope="module")
def unanchored(tiny_llama, data, moved, tmp_path_factory):
    """The control: the same continuation under a constant reward with kl_coef 0 (nothing pulls back)."""
    result = train_from(tiny_llama, data, tmp_path_factory.mktemp("control"), {"type": "constant"}, moved[0], kl_coef=0.0)
    return exact_kl_to_reference(result.adapter_dir, tiny_llama, PROMPTS)


@pytest.mark.parametrize("estimator,in_reward", sorted(ANCHORS), ids=lambda v: str(v))
def test_every_accepted_combination_pulls_a_moved_policy_back_to_the_reference(estimator, in_reward, tiny_llama, data,
                                                                               moved, unanchored, tmp_path):
    start = moved[1]
    assert start > 0.3  # moved: the anchor has work to do
    result = train_from(tiny_llama, data, tmp_path, {"type": "constant"}, moved[0], kl_coef=2.0,
                        kl_estimator=estimator, kl_in_reward=in_reward)
    end = exact_kl_to_reference(result.adapter_dir, tiny_llama, PROMPTS)
    assert end < 0.6 * unanchored and end < 0.6 * start, (start, unanchored, end)
    assert (result.history["kl"] >= 0).all()  # the logged `kl` (k3) never reads negative, whatever the estimator


def test_k1_differentiated_as_it_is_does_not_pull_back(tiny_llama, data, moved, unanchored, tmp_path, monkeypatch):
    """What the surrogate fixes: differentiating k1 itself (the old code) gives a gradient that is
    zero in expectation: a moved policy is not brought back as the accepted settings bring it."""
    monkeypatch.setattr("moalign.rl.trainer.kl_loss_term", kl_module.kl_per_token)
    result = train_from(tiny_llama, data, tmp_path, {"type": "constant"}, moved[0], kl_coef=2.0, kl_estimator="k1")
    end = exact_kl_to_reference(result.adapter_dir, tiny_llama, PROMPTS)
    assert end > 0.6 * min(moved[1], unanchored), (moved[1], unanchored, end)


def test_the_reference_is_computed_without_dropout(tmp_path, one_torch_thread):
    """GPT-2 trains with dropout; at LoRA's start the policy is the reference, so the in-reward KL
    must be exactly 0 (a reference pass in train mode drew dropout: |k1| of about 2 a sequence)."""
    from tiny import make_tiny_gpt2

    model = str(make_tiny_gpt2(tmp_path / "gpt2", dropout=0.3))
    config = tiny_config(model, write_prompts(tmp_path / "p.jsonl"), tmp_path,
                         reward=RewardConfig(objectives={"c": {"type": "constant"}}), optim=OptimConfig(steps=1, lr=1e-9),
                         algorithm=AlgorithmConfig(name="rloo", kl_coef=1.0, kl_estimator="k1", kl_in_reward=True))
    assert not config.model.disable_dropout
    history = moalign.train(config).history
    assert history["kl/in_reward"].abs().max() == 0.0
