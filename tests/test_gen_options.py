"""Speed options: validated by name, and inert on CPU."""
import pytest
import torch

from moalign import ConfigError
from moalign.models import load_causal_lm, torch_dtype
from moalign.rl.config import ModelConfig, SamplingConfig


@pytest.mark.parametrize("kwargs, key", [({"dtype": "bf16"}, "model.dtype"),
                                         ({"attn_implementation": "flash"}, "model.attn_implementation")])
def test_model_speed_options_are_checked_by_name(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        ModelConfig(**kwargs)


def test_auto_dtype_is_bfloat16_on_cuda_only():
    assert torch_dtype("auto", "cuda:0") is torch.bfloat16
    assert torch_dtype("auto", "cpu") is torch.float32
    assert torch_dtype("float16", "cpu") is torch.float16


def test_attention_implementation_reaches_the_model(tiny_llama):
    model = load_causal_lm(tiny_llama, "auto", "cpu", attn_implementation="eager")
    assert model.config._attn_implementation == "eager" and model.dtype is torch.float32


def test_static_cache_is_ignored_on_cpu(tiny_llama, monkeypatch):
    from transformers import AutoTokenizer

    from moalign.rl.sampling import generate

    assert SamplingConfig().static_cache is False  # off by default
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.padding_side = "left"
    model = load_causal_lm(tiny_llama, device="cpu").eval()
    seen, real = [], model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: seen.append(kw) or real(**kw))
    generate(model, tok, ["the cat", "a dog sat"], n=2, max_new_tokens=4, temperature=0.0, static_cache=True)
    assert seen and all("cache_implementation" not in kw for kw in seen)
