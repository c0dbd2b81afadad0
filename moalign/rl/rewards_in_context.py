"""Rewards-in-Context (Yang et al., 2024): one supervised run on a pool of scored samples, each
sample's scores stated in its prompt, so that at inference the prompt asks for the scores wanted
and one policy serves every trade-off.

Every objective is stated on one scale: its z-score over the training samples, negated for an
objective to minimise so that higher is better for all of them, rounded to one decimal (RiC's
quantisation). The statement opens the user's message, ``[targets: chrf=1.3 verbosity=-0.4]``,
then the prompt on the next line; `target_prompt` is the only place it is written. Training
writes it into each sample's prompt; everything after training (evaluation at a weight vector, a
search's policies, `moalign.load_policy`, `moalign generate`, exports) formats prompts through a
tokenizer whose chat template writes it (`targets_tokenizer`), as conditioned policies do.

A weight vector w asks for targets by RiC's preference-to-reward mapping (the `l2` rule of its
evaluation): target_i = low_i + (high_i - low_i) * w_i / ||w||_2. All weight on one objective asks
for its best stated score and the others' worst; equal weights for 1/sqrt(m) of each range (71% for
two objectives). low and high
are the 1st and 99th percentiles of the stated scores rather than RiC's minimum and maximum, so
that one outlying sample does not set what every prompt asks for. The scale travels with the
adapter (`rewards_in_context.json`), so whoever loads the policy states targets as training did.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from moalign.errors import MoalignError

DECIMALS = 1
SCALE_FILE = "rewards_in_context.json"
QUANTILES = (0.01, 0.99)


def target_prompt(prompt: str, names: list[str], targets) -> str:
    """The prompt a Rewards-in-Context policy sees when asked for `targets` (one per objective).

    >>> target_prompt("Summarize: the council voted.", ["chrf", "verbosity"], [1.26, -0.4])
    '[targets: chrf=1.3 verbosity=-0.4]\\nSummarize: the council voted.'
    """
    stated = " ".join(f"{name}={_fmt(t)}" for name, t in zip(names, targets))
    return f"[targets: {stated}]\n{prompt}"


def _fmt(value: float) -> str:
    text = f"{round(float(value), DECIMALS):.{DECIMALS}f}"
    return "0.0" if text == "-0.0" else text


def targets_tokenizer(tokenizer, names: list[str], targets):
    """A copy of `tokenizer` whose chat template states `targets` before every user message."""
    from moalign.rl.conditioning import stating_tokenizer

    return stating_tokenizer(tokenizer, target_prompt("", names, targets))


@dataclass
class ScoreScale:
    """How one run states scores: per objective (in `names` order) the mean and std that make
    z-scores, the direction, and the low and high stated scores weight vectors map between."""

    names: list[str]
    directions: list[str]
    mean: list[float]
    std: list[float]
    low: list[float]
    high: list[float]

    @classmethod
    def fit(cls, values: np.ndarray, names: list[str], directions: list[str]) -> "ScoreScale":
        values = np.asarray(values, dtype=float)
        if len(values) < 2:
            raise MoalignError("rewards_in_context needs at least 2 scored samples to put their scores on a scale")
        mean, std = values.mean(0), values.std(0, ddof=1)
        scale = cls(list(names), list(directions), mean.tolist(), np.where(std > 0, std, 1.0).tolist(), [], [])
        stated = scale.state(values)
        scale.low, scale.high = (np.quantile(stated, q, axis=0).round(DECIMALS).tolist() for q in QUANTILES)
        return scale

    def state(self, values: np.ndarray) -> np.ndarray:
        """The stated (normalised, higher-is-better, rounded) scores of rows of raw `values`."""
        z = (np.asarray(values, dtype=float) - np.asarray(self.mean)) / np.asarray(self.std)
        sign = np.array([1.0 if d == "maximize" else -1.0 for d in self.directions])
        return np.round(z * sign, DECIMALS)

    def targets(self, weights) -> list[float]:
        """RiC's preference-to-reward mapping (module docstring) for one weight vector."""
        w = np.asarray(weights, dtype=float)
        if w.shape != (len(self.names),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise MoalignError(f"rewards_in_context: weights must be {len(self.names)} non-negative numbers, not all 0, "
                               f"got {list(np.atleast_1d(w))}")
        low, high = np.asarray(self.low), np.asarray(self.high)
        return np.round(low + (high - low) * w / np.linalg.norm(w), DECIMALS).tolist()

    def save(self, directory: str | Path) -> None:
        Path(directory, SCALE_FILE).write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> "ScoreScale":
        path = Path(directory, SCALE_FILE)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: data[k] for k in ("names", "directions", "mean", "std", "low", "high")})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MoalignError(f"{path}: not a Rewards-in-Context score scale ({exc})".splitlines()[0]) from None
