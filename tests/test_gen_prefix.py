"""Generation that prefills each group's prompt once gives the plain call's tokens."""
import pytest
import torch

from moalign.rl import sampling
from moalign.rl.sampling import generate

PROMPTS = ["the cat sat on the", "a dog", "rain", "one two three four five six"]  # left padding of 0 to 5


@pytest.fixture(scope="module")
def lora_model(tiny_llama):
    from tiny import tiny_lora

    model, tok = tiny_lora(tiny_llama)
    return model.eval(), tok


def _both(model, tok, monkeypatch, **kwargs):
    calls = []
    real = sampling.generate_from_shared_prompts
    monkeypatch.setattr(sampling, "generate_from_shared_prompts", lambda *a, **k: calls.append(1) or real(*a, **k))
    shared = generate(model, tok, PROMPTS, share_prompt=True, **kwargs)
    plain = generate(model, tok, PROMPTS, share_prompt=False, **kwargs)
    assert calls == [1]  # the shared path ran, and only for share_prompt=True
    return shared, plain


def test_greedy_tokens_equal_plain_generation(lora_model, monkeypatch):
    model, tok = lora_model
    shared, plain = _both(model, tok, monkeypatch, n=3, max_new_tokens=8, temperature=0.0)
    assert torch.equal(shared.input_ids, plain.input_ids)
    assert torch.equal(shared.attention_mask, plain.attention_mask)
    assert shared.texts == plain.texts
    # the groups are really greedy copies: all rows of a prompt agree, prompts differ
    assert all(shared.texts[i] == shared.texts[i - i % 3] for i in range(len(shared.texts)))
    assert len(set(shared.texts[::3])) > 1


def test_sampled_tokens_equal_plain_generation_under_one_seed(lora_model, monkeypatch):
    # The prefill draws no random numbers and generate's first step still sees the last prompt
    # token, so the draws are the plain call's, in the same order.
    model, tok = lora_model
    shared, plain = _both(model, tok, monkeypatch, n=4, max_new_tokens=10, temperature=1.0, top_k=20, seed=3)
    assert torch.equal(shared.input_ids, plain.input_ids)
    assert len(set(shared.texts[:4])) > 1  # sampling: a group's completions differ


def test_model_like_objects_take_the_plain_call(lora_model):
    model, tok = lora_model

    class Wrapper:  # what a decoding-time mixture looks like to generate: no forward, no cache
        training = False

        def parameters(self):
            return model.parameters()

        def generate(self, **kwargs):
            assert "cache" not in kwargs and "past_key_values" not in kwargs
            return model.generate(**kwargs)

    wrapped = generate(Wrapper(), tok, PROMPTS, n=2, max_new_tokens=5, temperature=0.0)
    direct = generate(model, tok, PROMPTS, n=2, max_new_tokens=5, temperature=0.0)
    assert torch.equal(wrapped.input_ids, direct.input_ids)


def test_a_right_padding_tokenizer_generates_as_a_left_padding_one(lora_model):
    """A tokenizer as loaded pads on the right; generation continues from each row's right edge,
    so `generate` pads left whatever the tokenizer's default (right padding gave other tokens)."""
    import copy

    model, tok = lora_model
    right, left = copy.deepcopy(tok), copy.deepcopy(tok)
    right.padding_side, left.padding_side = "right", "left"
    a = generate(model, right, PROMPTS, 1, max_new_tokens=6, temperature=0.0)
    b = generate(model, left, PROMPTS, 1, max_new_tokens=6, temperature=0.0)
    assert torch.equal(a.input_ids, b.input_ids) and a.texts == b.texts
    assert (a.attention_mask[:, 0] == 0).any()  # the prompts were padded, on the left
