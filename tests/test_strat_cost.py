"""Compute accounting on the tiny model: the trainer's cost/ metrics equal what its generate calls
sampled and what its log-prob passes ran, measured here by wrapping those calls."""
import pytest

import moalign
from moalign.rl import evaluation, trainer
from moalign.rl.config import AlgorithmConfig, OptimConfig, SamplingConfig

from rl_helpers import tiny_config, write_prompts


@pytest.mark.parametrize("algorithm", [AlgorithmConfig(name="rloo", kl_coef=0.1),  # reference + policy passes
                                       AlgorithmConfig(name="grpo", kl_coef=0.1, inner_epochs=2)])  # + old policy
def test_cost_counts_sampled_tokens_and_every_forward_pass(algorithm, tiny_llama, tmp_path, monkeypatch):
    seen = {"generated": 0, "forward": 0, "train_generate": 0}

    def recording(real, training):
        def generate(*args, **kwargs):
            rollout = real(*args, **kwargs)
            seen["generated"] += int(rollout.completion_mask.sum())  # the sampled tokens, EOS included
            seen["forward"] += int(rollout.attention_mask.sum())  # prompt (once per sample) + completion
            seen["train_generate"] += training
            return rollout
        return generate

    def passes(real):
        def logprobs(model, input_ids, attention_mask, *args, **kwargs):
            seen["forward"] += int(attention_mask.sum())
            return real(model, input_ids, attention_mask, *args, **kwargs)
        return logprobs

    monkeypatch.setattr(trainer, "generate", recording(trainer.generate, 1))
    monkeypatch.setattr(evaluation, "generate", recording(evaluation.generate, 0))
    monkeypatch.setattr(trainer, "completion_logprobs", passes(trainer.completion_logprobs))
    monkeypatch.setattr(trainer, "grouped_completion_logprobs", passes(trainer.grouped_completion_logprobs))
    cfg = tiny_config(tiny_llama, write_prompts(tmp_path / "p.jsonl"), tmp_path, algorithm=algorithm,
                      optim=OptimConfig(steps=1, lr=2e-2, micro_batch_size=4),
                      sampling=SamplingConfig(num_generations=2, prompts_per_step=3, max_new_tokens=6))
    result = moalign.train(cfg)
    assert seen["train_generate"] == 1 and result.cost["cost/train_steps"] == 1
    assert result.cost["cost/generated_tokens"] == seen["generated"] > 0
    assert result.cost["cost/forward_tokens"] == seen["forward"] > seen["generated"]
    assert 0 < result.cost["cost/wall_time_s"] < result.wall_time
    # per step, what the totals are made of
    assert result.history["tokens/generated"].sum() < result.cost["cost/generated_tokens"]  # + evaluation's
