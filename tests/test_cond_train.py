"""A weight-conditioned policy: the weights are drawn per prompt group, reproducibly and resume-exactly,
stated in its prompts, and steer what it says (tiny Llama whose vocabulary can read the weights)."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import moalign
from moalign import ConfigError
from moalign.config import from_dict
from moalign.rl import trainer
from moalign.rl.conditioning import condition_prompt, conditioned_tokenizer, draw_weights
from moalign.rl.config import AlgorithmConfig, ConditioningConfig, OptimConfig, RewardConfig, SamplingConfig, TrainConfig
from moalign.models import load_causal_lm, load_tokenizer
from moalign.rl.sampling import completion_logprobs, generate

from rl_helpers import tiny_config, write_prompts
from tiny import WORDS, make_tokenizer

OBJECTIVES = {"good": {"type": "word_share", "word": "good"}, "bad": {"type": "word_share", "word": "bad"}}
# the template's words and the hundredths it writes, so the tiny model can tell weights apart
VOCAB = list(WORDS) + ["[", "]", "weights", ":", "=", "."] + [str(i) for i in range(10)] + [f"{i:02d}" for i in range(100)]


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    """A tiny Llama (as tests/tiny.py builds) whose tokenizer has a token for every piece of the template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("reader")
    tokenizer = make_tokenizer(VOCAB)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False, initializer_range=0.2)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_prompts(tmp_path_factory.mktemp("data") / "prompts.jsonl")


def conditioned(model, data, tmp_path, steps=30, **conditioning):
    return tiny_config(model, data, tmp_path, reward=RewardConfig(objectives=OBJECTIVES, weights=[1, 0]),
                       optim=OptimConfig(steps=steps, lr=2e-2), algorithm=AlgorithmConfig(name="rloo", kl_coef=0.0),
                       conditioning=ConditioningConfig(enabled=True, **conditioning))


def test_weights_are_drawn_per_group_reproducibly():
    cfg = ConditioningConfig(enabled=True, alpha=[1.0, 3.0])
    drawn = draw_weights(cfg, 2, 4, seed=0, step=5)
    assert drawn.shape == (4, 2) and np.allclose(drawn.sum(1), 1.0)
    np.testing.assert_array_equal(drawn, draw_weights(cfg, 2, 4, seed=0, step=5))  # a pure function of (seed, step)
    assert not np.array_equal(drawn, draw_weights(cfg, 2, 4, seed=0, step=6))
    assert len({tuple(w) for w in drawn}) > 1  # one vector per group, not one per step
    many = np.concatenate([draw_weights(cfg, 2, 64, seed=1, step=s) for s in range(1, 30)])
    assert abs(many[:, 1].mean() - 0.75) < 0.03  # Dir(1, 3): E[w_2] = 3/4
    assert np.allclose(many * 100, np.round(many * 100))  # the hundredths the prompt states
    chosen = draw_weights(ConditioningConfig(enabled=True, draw="set", weights=[[1, 0], [0, 1]]), 2, 200, 0, 1)
    assert {tuple(w) for w in chosen} == {(1.0, 0.0), (0.0, 1.0)}


def test_the_prompt_states_the_weights():
    assert condition_prompt("the cat sat", ["good", "bad"], [2, 1]) == "[weights: good=0.67 bad=0.33]\nthe cat sat"


@pytest.mark.parametrize("section,message", [
    ({"draw": "uniform"}, "conditioning.draw must be one of dirichlet | set, got 'uniform'"),
    ({"alpha": 0}, "conditioning.alpha must be a finite number > 0"),
    ({"alpha": [1, 1, 1]}, "conditioning.alpha: got 3 values for 2 objectives"),
    ({"draw": "set"}, "conditioning.weights: draw 'set' needs a list of weight vectors"),
    ({"draw": "set", "weights": [[1, 0], [0.5]]}, r"conditioning.weights\[1\]: expected 2 non-negative weights"),
    ({"given": "adapters"}, "conditioning.given must be 'prompt'"),
])
def test_a_bad_conditioning_section_is_one_config_error(section, message):
    data = {"data": {"train": "prompts.jsonl"}, "reward": {"objectives": ["chrf", "verbosity"]},
            "conditioning": {"enabled": True, **section}}
    with pytest.raises(ConfigError, match=message) as info:
        from_dict(TrainConfig, data)
    assert "\n" not in str(info.value)


def test_a_resumed_conditioned_run_draws_what_the_uninterrupted_one_did(tiny_llama, data, tmp_path, monkeypatch):
    def config(where):
        cfg = conditioned(tiny_llama, data, tmp_path / where, steps=3, alpha=0.5)
        cfg.checkpoint_every, cfg.sampling = 2, SamplingConfig(num_generations=2, prompts_per_step=2, max_new_tokens=4)
        cfg.data.max_eval_prompts = 1
        return cfg

    reference = moalign.train(config("reference"))
    real, calls = trainer.policy_loss, {"n": 0}

    def interrupt_in_step_3(*args, **kwargs):
        calls["n"] += 1  # one call per step here
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "policy_loss", interrupt_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        moalign.train(config("resumed"))
    monkeypatch.setattr(trainer, "policy_loss", real)
    (run_dir,) = (tmp_path / "resumed" / "runs").iterdir()
    resumed = moalign.train(config("resumed"), resume_run_id=run_dir.name)
    cols = ["conditioning/weight/good", "conditioning/weight/bad", "reward/total", "loss"]
    np.testing.assert_allclose(resumed.history[cols].to_numpy(), reference.history[cols].to_numpy(), rtol=1e-5, atol=1e-6)
    assert reference.history["conditioning/weight/good"].nunique() > 1
    for name, tensor in load_file(str(reference.adapter_dir / "adapter_model.safetensors")).items():
        torch.testing.assert_close(load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))[name], tensor)


def test_the_policy_answers_each_weight_vector_differently_and_deterministically(reader):
    """The weights reach the network: another vector, other log-probs for one completion; the same
    vector, the same log-probs and the same greedy completions (training makes them differ usefully)."""
    tokenizer = load_tokenizer(reader)
    tokenizer.padding_side = "left"
    model = load_causal_lm(reader, device="cpu").eval()
    prompts = ["the cat sat", "a dog was"]

    def answer(weights):
        told = conditioned_tokenizer(tokenizer, ["good", "bad"], weights)
        rollout = generate(model, told, prompts, 1, 6, temperature=0.0)
        P = rollout.input_ids.shape[1] - rollout.n_completion  # the conditioned prompts, as the model saw them
        completion = torch.full((len(prompts), 6), told.convert_tokens_to_ids("good"))
        ids = torch.cat([rollout.input_ids[:, :P], completion], 1)
        mask = torch.cat([rollout.attention_mask[:, :P], torch.ones_like(completion)], 1)
        with torch.no_grad():
            logp, _ = completion_logprobs(model, ids, mask, 6)
        return rollout.texts, logp

    texts, logp = answer([1.0, 0.0])
    again, logp_again = answer([1.0, 0.0])
    other, logp_other = answer([0.0, 1.0])
    assert texts == again and torch.equal(logp, logp_again)
    assert not torch.allclose(logp, logp_other, atol=1e-4)
    assert texts != other


def test_the_conditioned_chat_template_writes_what_training_wrote():
    """Through a chat template: the statement opens each user message (not the system's), exactly
    the text training formats from `condition_prompt`; without one, statement and prompt as they are."""
    from moalign.models import format_prompt

    tokenizer = make_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    told = conditioned_tokenizer(tokenizer, ["good", "bad"], [0.25, 0.75])
    trained_on = format_prompt(tokenizer, condition_prompt("the cat", ["good", "bad"], [0.25, 0.75]))
    assert format_prompt(told, "the cat") == trained_on == "<user>[weights: good=0.25 bad=0.75]\nthe cat</s><assistant>"
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the cat"}]
    assert told.apply_chat_template(chat, tokenize=False).startswith("<system>be brief</s><user>[weights: good=0.25")
    assert tokenizer.chat_template.startswith("{% for m")  # the policy's own tokenizer is left as it was
    plain = make_tokenizer()
    assert format_prompt(conditioned_tokenizer(plain, ["good", "bad"], [1, 0]), "the cat") == \
        format_prompt(plain, condition_prompt("the cat", ["good", "bad"], [1, 0]))
