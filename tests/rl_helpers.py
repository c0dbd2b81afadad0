"""Shared pieces of the RL tests: toy objectives and a tiny-model config."""
import json
from pathlib import Path

from moalign import Objective, register_objective
from moalign.rl.config import AlgorithmConfig, DataConfig, ModelConfig, OptimConfig, RewardConfig, SamplingConfig, TrackingConfig, TrainConfig


class WordShare(Objective):
    """Share of the completion's words equal to `word` (a reward that prefers a token)."""

    name = "word_share"

    def __init__(self, word: str = "good"):
        self.word = word

    def _score(self, batch):
        return [sum(w == self.word for w in c.split()) / max(len(c.split()), 1) for c in batch.completions]


register_objective("word_share", WordShare)

PROMPTS = ["the cat sat", "a dog was", "the sun is", "rain on the city", "a bike lane", "the river",
           "one two three", "the library", "news report", "green tree"]


def write_prompts(path: Path) -> str:
    path.write_text("\n".join(json.dumps({"prompt": p, "references": ["the cat sat on the mat"]}) for p in PROMPTS))
    return str(path)


def tiny_config(model_path: str, data: str, tmp: Path, **sections) -> TrainConfig:
    """Small and fast: 4 prompts x 4 samples x 8 tokens a step, LoRA r=8, no MLflow unless asked."""
    defaults = dict(
        model=ModelConfig(name=model_path, lora_r=8),
        data=DataConfig(train=data),
        sampling=SamplingConfig(num_generations=4, prompts_per_step=4, max_new_tokens=8),
        reward=RewardConfig(objectives={"good": {"type": "word_share"}}),
        algorithm=AlgorithmConfig(name="rloo", kl_coef=0.0),
        optim=OptimConfig(steps=30, lr=2e-2),
        tracking=TrackingConfig(enabled=False),
        output_dir=str(tmp / "runs"), checkpoint_every=100, progress=False,
    )
    defaults.update(sections)
    return TrainConfig(**defaults)


class Constant(Objective):
    """The same reward for every sample: only the KL term can move the policy."""

    name = "constant"

    def __init__(self, value: float = 1.0):
        self.value = value

    def _score(self, batch):
        return [self.value] * len(batch)


register_objective("constant", Constant)
