"""Every generation follows moalign's own settings: a checkpoint's generation_config.json (here
repetition_penalty 3 and min_new_tokens 5, as many Hub instruct models ship such fields) must not
change what training samples or what a front's policies decode, or training is off-policy and a
mix of one endpoint stops being that endpoint."""
import json

import pytest
import torch

from moalign.models import load_causal_lm, load_tokenizer
from moalign.pareto.mixing import DecodingMix
from moalign.rl.config import ModelConfig
from moalign.rl.sampling import generate

from test_mix_decoding import make_endpoints
from tiny import make_tiny_llama

PROMPTS = ["the cat sat", "a dog was", "rain on the city", "the river", "one two three"]


@pytest.fixture(scope="module")
def opinionated(tmp_path_factory) -> str:
    """The tiny Llama whose generation_config.json penalises repeats and forbids early stops."""
    path = make_tiny_llama(tmp_path_factory.mktemp("opinionated"))
    config = json.loads((path / "generation_config.json").read_text())
    config.update(repetition_penalty=3.0, min_new_tokens=5, no_repeat_ngram_size=2)
    (path / "generation_config.json").write_text(json.dumps(config))
    return str(path)


def argmax_misses(model, rollout) -> int:
    """Completion tokens that are not the model's argmax given what precedes them."""
    with torch.no_grad():
        positions = (rollout.attention_mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask, position_ids=positions).logits
    T = rollout.n_completion
    best = logits[:, -T - 1:-1].argmax(-1)
    return int(((best != rollout.input_ids[:, -T:]) & rollout.completion_mask).sum())


@pytest.mark.parametrize("n", [1, 2])  # one sample a prompt (plain call) and groups (shared-prompt prefill)
def test_greedy_decoding_is_the_argmax_whatever_the_checkpoint_asks(opinionated, n, one_torch_thread):
    tokenizer = load_tokenizer(opinionated)
    model = load_causal_lm(opinionated, "float32", "cpu")
    assert model.generation_config.repetition_penalty == 3.0  # the file was read: the test has work to do
    rollout = generate(model, tokenizer, PROMPTS * 4, n, 10, 0.0, use_chat_template=False)
    assert argmax_misses(model, rollout) == 0
    assert model.generation_config.repetition_penalty == 3.0  # left as it was found


def test_a_one_endpoint_mix_decodes_as_that_endpoint(opinionated, tmp_path, one_torch_thread):
    mix = DecodingMix(ModelConfig(name=opinionated), make_endpoints(opinionated, tmp_path, k=2))
    for name, w in zip(mix.names, [(1.0, 0.0), (0.0, 1.0)]):
        with mix.mixed(w) as policy:
            mixed = generate(policy, mix.tokenizer, PROMPTS, 1, 8, 0.0, use_chat_template=False).input_ids
        mix.model.set_adapter(name)
        alone = generate(mix.model, mix.tokenizer, PROMPTS, 1, 8, 0.0, use_chat_template=False).input_ids
        assert torch.equal(mixed, alone)
