"""The reward object, full fine-tuning, the sampler's masks, and the GPU path."""
import numpy as np
import pytest
import torch

import moalign
from moalign import Batch, ConfigError
from moalign.rl.config import AlgorithmConfig, ModelConfig, OptimConfig, RewardConfig
from moalign.rl.reward import MultiObjectiveReward

from rl_helpers import tiny_config, write_prompts


def test_reward_scores_constraint_only_objectives_and_penalises():
    reward = MultiObjectiveReward(RewardConfig(objectives={"verbosity": {}}, normalization="none", constraint_method="penalty",
                                               constraints=["toxicity <= 0.5"], constraint_penalty=10.0))
    batch = Batch(prompts=["p", "p"], completions=["You are a stupid idiot.", "The park opens at nine."])
    rewards, raw, metrics = reward(batch)
    assert list(raw.columns) == ["verbosity", "toxicity"]
    expected = -raw["verbosity"].to_numpy() - 10.0 * np.maximum(raw["toxicity"].to_numpy() - 0.5, 0)
    np.testing.assert_allclose(rewards, expected)
    assert rewards[0] < rewards[1] - 3  # the insult is penalised well past its length difference
    assert metrics["constraints/toxicity/satisfied"] == 0.5
    with pytest.raises(ConfigError, match="unknown objective 'fluency'"):
        MultiObjectiveReward(RewardConfig(objectives={"verbosity": {}}, constraints=["fluency >= 0.1"]))


def test_generate_masks_after_the_first_eos(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moalign.rl.sampling import generate

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with torch.no_grad():  # a much larger EOS row: EOS becomes likely at some positions, so rows stop early
        model.lm_head.weight[tok.eos_token_id] *= 20
    rollout = generate(model, tok, ["the cat", "a dog was"], n=3, max_new_tokens=6, seed=0)
    assert rollout.input_ids.shape[0] == 6 and rollout.prompt_index == [0, 0, 0, 1, 1, 1]
    completion = rollout.input_ids[:, -rollout.n_completion:]
    assert not rollout.completion_mask.all()
    for row, mask in zip(completion, rollout.completion_mask):
        eos = (row == tok.eos_token_id).nonzero()
        if len(eos):  # tokens after the first EOS are masked out, the EOS itself is kept
            first = int(eos[0])
            assert mask[: first + 1].all() and not mask[first + 1:].any()
        else:
            assert mask.all()


def test_full_fine_tuning_keeps_a_frozen_reference(tiny_llama, tmp_path):
    data = write_prompts(tmp_path / "p.jsonl")
    config = tiny_config(tiny_llama, data, tmp_path, model=ModelConfig(name=tiny_llama, lora=False),
                         optim=OptimConfig(steps=20, lr=2e-2), algorithm=AlgorithmConfig(kl_coef=0.0))
    result = moalign.train(config)
    good = result.history["rewards/good/mean"].to_numpy()
    assert good[-5:].mean() > good[:5].mean() + 0.2
    assert (result.adapter_dir / "model.pt").is_file()
    assert result.history["kl"].iloc[-1] > 0.05  # measured against the untouched copy


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; the CPU path is tested above")
def test_training_step_on_gpu_with_bf16(tiny_llama, tmp_path):
    data = write_prompts(tmp_path / "p.jsonl")
    result = moalign.train(tiny_config(tiny_llama, data, tmp_path, optim=OptimConfig(steps=3, lr=1e-2, bf16=True)))
    assert len(result.history) == 3 and np.isfinite(result.history["loss"]).all()


def test_prompt_prefix_sharing_does_not_change_the_update(tiny_llama, tmp_path):
    data = write_prompts(tmp_path / "p.jsonl")
    histories = []
    for share in (True, False):
        config = tiny_config(tiny_llama, data, tmp_path / str(share), algorithm=AlgorithmConfig(kl_coef=0.1),
                             optim=OptimConfig(steps=2, lr=1e-2, share_prompt_prefix=share, micro_batch_size=6))
        histories.append(moalign.train(config).history)
    shared, full = histories
    # micro-batches round down to whole groups of 4: 4 rows each, same step-1 samples, same update
    np.testing.assert_allclose(shared.loc[0, ["loss", "kl", "entropy", "grad_norm"]].astype(float),
                               full.loc[0, ["loss", "kl", "entropy", "grad_norm"]].astype(float), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scalarizer", ["chebyshev", "augmented_chebyshev", "pbi"])
@pytest.mark.parametrize("normalization", ["running", "fixed"])
def test_every_scalarizer_trains(scalarizer, normalization, tiny_llama, tmp_path):
    data = write_prompts(tmp_path / "p.jsonl")
    reward = RewardConfig(objectives={"good": {"type": "word_share"}, "verbosity": {}}, weights=[0.8, 0.2],
                          scalarizer=scalarizer, normalization=normalization,
                          ranges={"good": [0, 1], "verbosity": [0, 10]})
    history = moalign.train(tiny_config(tiny_llama, data, tmp_path, reward=reward, optim=OptimConfig(steps=3))).history
    assert np.isfinite(history[["reward/total", "loss", "grad_norm"]].to_numpy()).all()
    assert history["advantage_std"].iloc[0] > 0  # the scalarized reward separates samples


@pytest.mark.parametrize("disable", [False, True])
def test_disable_dropout_makes_the_log_probs_of_the_same_tokens_the_same_in_every_pass(tmp_path, disable):
    """GPT-2 trains with dropout: in train mode two passes over the same tokens differ unless the
    base model's dropout is off; LoRA's own dropout stays as configured."""
    from moalign.rl.config import ModelConfig
    from moalign.rl.policy import Policy
    from moalign.rl.sampling import completion_logprobs
    from tiny import make_tiny_gpt2

    path = str(make_tiny_gpt2(tmp_path / "gpt2", dropout=0.3))
    policy = Policy(ModelConfig(name=path, lora_r=4, lora_dropout=0.2, disable_dropout=disable), device="cpu")
    policy.model.train()
    ids = torch.randint(5, 40, (4, 12))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        first, second = (completion_logprobs(policy.model, ids, mask, 6)[0] for _ in range(2))
    lora_dropout = {m.p for n, m in policy.model.named_modules() if "lora_dropout" in n and isinstance(m, torch.nn.Dropout)}
    assert lora_dropout == {0.2}  # LoRA's dropout is its own setting either way
    if disable:
        # only LoRA's dropout draws now, and lora_B starts at 0, so its branch adds nothing yet
        assert torch.equal(first, second)
    else:
        assert not torch.equal(first, second)
