"""Decoding-time mixing (MOD): the mixed policy against each endpoint alone and against a direct
computation of the weighted product of the endpoints' next-token distributions."""
import pytest
import torch

from moalign.errors import MoalignError
from moalign.pareto.mixing import DecodingMix
from moalign.rl.config import ModelConfig
from moalign.rl.sampling import generate

PROMPTS = ["the cat sat", "rain", "the river is very long and green"]
T = 6  # new tokens: enough to diverge, few enough to stay fast


def make_endpoints(model_path: str, root, k: int = 2) -> list:
    """K random LoRA adapters (B nonzero, so each moves the base) saved as training saves them."""
    from peft import LoraConfig, get_peft_model

    from moalign.models import load_causal_lm
    from moalign.rl.policy import peft_wrapping

    dirs = []
    for i in range(k):
        torch.manual_seed(100 + i)
        with peft_wrapping():
            peft = get_peft_model(load_causal_lm(model_path, device="cpu"),
                                  LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
        dirs.append(root / f"endpoint{i}")
        peft.save_pretrained(dirs[-1])
    return dirs


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mix(tiny_llama, tmp_path_factory):
    return DecodingMix(ModelConfig(name=tiny_llama), make_endpoints(tiny_llama, tmp_path_factory.mktemp("mix")))


def tokens(model, tokenizer, prompts=PROMPTS, temperature=0.0, seed=0, n=1):
    return generate(model, tokenizer, prompts, n, T, temperature, use_chat_template=False, seed=seed).input_ids


@pytest.fixture(scope="module")
def greedy(mix):
    """Greedy decodings at one-hot and even weights."""
    out = {}
    for w in ((1.0, 0.0), (0.5, 0.5), (0.0, 1.0)):
        with mix.mixed(w) as policy:
            out[w] = tokens(policy, mix.tokenizer)
    return out


def test_one_hot_weights_reproduce_each_endpoint_greedy(mix, greedy):
    for name, w in zip(mix.names, [(1.0, 0.0), (0.0, 1.0)]):
        mix.model.set_adapter(name)  # the endpoint alone, decoded by HF generate
        assert torch.equal(greedy[w], tokens(mix.model, mix.tokenizer))
    mix.model.set_adapter(mix.names[0])


class FirstScores:
    """A logits processor that keeps the scores of the first decoding step."""

    def __init__(self):
        self.scores = None

    def __call__(self, input_ids, scores):
        if self.scores is None:
            self.scores = scores.clone()
        return scores


def test_next_token_distribution_is_the_normalised_weighted_product(mix):
    w = [0.3, 0.7]
    batch = mix.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    probs = []  # each endpoint alone, by an ordinary forward with one active adapter
    for name in mix.names:
        mix.model.set_adapter(name)
        probs.append(torch.softmax(mix.model(**batch, position_ids=positions).logits[:, -1], -1))
    mix.model.set_adapter(mix.names[0])
    product = probs[0] ** w[0] * probs[1] ** w[1]
    expected = product / product.sum(-1, keepdim=True)
    seen = FirstScores()
    with mix.mixed(w) as policy:
        policy.generate(**batch, max_new_tokens=1, do_sample=True, logits_processor=[seen])
    torch.testing.assert_close(torch.softmax(seen.scores, -1), expected, atol=1e-6, rtol=1e-5)
    assert (expected - probs[0]).abs().max() > 1e-2 and (expected - probs[1]).abs().max() > 1e-2  # it has teeth


def test_weights_change_the_output(greedy):
    assert not torch.equal(greedy[1.0, 0.0], greedy[0.5, 0.5])
    assert not torch.equal(greedy[0.5, 0.5], greedy[0.0, 1.0])


def test_left_padded_batch_equals_one_row_at_a_time(mix):
    with mix.mixed([0.5, 0.5]) as policy:
        full = generate(policy, mix.tokenizer, PROMPTS, 1, T, 0.0, use_chat_template=False)
        for i, prompt in enumerate(PROMPTS):
            one = generate(policy, mix.tokenizer, [prompt], 1, T, 0.0, use_chat_template=False)
            row, n = full.input_ids[i, -full.n_completion:], one.n_completion
            assert torch.equal(row[:n], one.input_ids[0, -n:])
            assert (row[n:] == mix.tokenizer.pad_token_id).all()


def test_rows_stop_at_eos_and_are_padded_after(mix):
    batch = mix.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    P = batch["input_ids"].shape[1]
    with mix.mixed([0.5, 0.5]) as policy:
        free = policy.generate(**batch, max_new_tokens=T)
        stop = int(free[0, P + 2])  # row 0's third token, made the EOS
        stopped = policy.generate(**batch, max_new_tokens=T, eos_token_id=stop, pad_token_id=0)
    for row, again in zip(free[:, P:], stopped[:, P:]):
        hits = (row == stop).nonzero()
        end = int(hits[0]) + 1 if len(hits) else len(row)
        assert torch.equal(again[:end], row[:end])
        assert (again[end:] == 0).all()
    assert stopped.shape[1] <= free.shape[1] and (stopped[0, P + 3:] == 0).all()


def test_sampling_is_reproducible_under_a_seed(mix):
    with mix.mixed([0.5, 0.5]) as policy:
        first = tokens(policy, mix.tokenizer, temperature=1.0, seed=3, n=3)
        again = tokens(policy, mix.tokenizer, temperature=1.0, seed=3, n=3)
        other = tokens(policy, mix.tokenizer, temperature=1.0, seed=4, n=3)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_bad_weights_are_one_line_errors(mix):
    with pytest.raises(MoalignError, match="expected 2, one per endpoint"):
        with mix.mixed([1.0]):
            pass
    with pytest.raises(MoalignError, match="positive sum"):
        with mix.mixed([0.0, 0.0]):
            pass


def test_full_fine_tuning_endpoints_mix_their_distributions(tiny_llama, tmp_path):
    """Endpoints saved as whole state dicts (`model.pt`, model.lora false) run as K models."""
    from moalign.models import load_causal_lm

    dirs, models = [], []
    for i in range(2):
        torch.manual_seed(i)
        model = load_causal_lm(tiny_llama, device="cpu").eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        dirs.append(tmp_path / f"full{i}")
        dirs[-1].mkdir()
        torch.save(model.state_dict(), dirs[-1] / "model.pt")
        models.append(model)
    mix = DecodingMix(ModelConfig(name=tiny_llama, lora=False), dirs)
    with mix.mixed([0.0, 1.0]) as policy:
        assert torch.equal(tokens(policy, mix.tokenizer), tokens(models[1], mix.tokenizer))
    batch = mix.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    logp = [torch.log_softmax(m(**batch, position_ids=positions).logits[:, -1], -1) for m in models]
    seen = FirstScores()
    with mix.mixed([0.25, 0.75]) as policy:
        policy.generate(**batch, max_new_tokens=1, logits_processor=[seen])
    torch.testing.assert_close(torch.log_softmax(seen.scores, -1),
                               torch.log_softmax(0.25 * logp[0] + 0.75 * logp[1], -1), atol=1e-5, rtol=1e-5)


def test_a_zero_weight_costs_no_forward(mix):
    assert mix.policy([0.0, 1.0]).forwards_per_token == 1 and mix.policy([0.2, 0.8]).forwards_per_token == 2
