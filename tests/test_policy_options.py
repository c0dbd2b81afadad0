"""Every kind of policy is built with the same model options: a front's policies differ by their
weights, never by how their base model was loaded (attention implementation, dtype)."""
import pytest

import moalign.models
from moalign.pareto.config import SearchConfig
from moalign.pareto.strategies import get_strategy
from moalign.pareto.strategies.base import EvalUnit
from moalign.rl.config import ModelConfig, RewardConfig
from moalign.rl.rewards_in_context import ScoreScale

from rl_helpers import tiny_config
from tiny import tiny_lora

import rl_helpers  # noqa: F401 (word_share)


@pytest.fixture(scope="module")
def adapter(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapter")
    model, _ = tiny_lora(tiny_llama)
    model.save_pretrained(folder)
    ScoreScale(["good", "bad"], ["maximize", "maximize"], [0, 0], [1, 1], [-1, -1], [1, 1]).save(folder)
    return str(folder)


@pytest.mark.parametrize("strategy,role", [("grid", "base"), ("conditioned", "conditioned"),
                                           ("rewards_in_context", "rewards_in_context"), ("soups", "soup"),
                                           ("mixing", "mix")])
def test_each_strategys_policies_load_the_base_with_the_configured_attention(strategy, role, tiny_llama, adapter, tmp_path,
                                                                            monkeypatch):
    loads = []
    real = moalign.models.load_causal_lm

    def recording(name, dtype="float32", device=None, trust_remote_code=False, attn_implementation=None):
        loads.append(attn_implementation)
        return real(name, dtype, device, trust_remote_code, attn_implementation)

    monkeypatch.setattr(moalign.models, "load_causal_lm", recording)
    for module in ("moalign.pareto.soups", "moalign.pareto.mixing"):  # they imported the name itself
        monkeypatch.setattr(f"{module}.load_causal_lm", recording, raising=False)
    train = tiny_config(tiny_llama, "unused.jsonl", tmp_path, model=ModelConfig(name=tiny_llama, attn_implementation="eager"),
                        reward=RewardConfig(objectives={"good": {"type": "word_share"}, "bad": {"type": "word_share", "word": "bad"}}))
    config = SearchConfig(train=train, strategy=strategy, weights=[[0.5, 0.5]])
    built = get_strategy(strategy)(config, ["good", "bad"], ["maximize"] * 2, [[0.5, 0.5]])
    sources = (adapter, adapter) if role in ("soup", "mix") else (adapter,)
    unit = EvalUnit(role, (0.5, 0.5) if role != "base" else None, 0, (), sources, group=role)
    for _ in built.policies([unit]):
        break
    assert loads and set(loads) == {"eager"}, loads
