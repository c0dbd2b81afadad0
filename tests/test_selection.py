"""Choosing among scored samples (moalign/selection.py): best-of-n keeps, for each prompt, the
feasible sample its weight vector's scalarisation ranks best; rejection fine-tuning keeps the top k."""
import itertools

import numpy as np
import pandas as pd
import pytest

from moalign.errors import MoalignError
from moalign.rl.config import RewardConfig
from moalign.rl.reward import MultiObjectiveReward
from moalign.scalarization import SCALARIZERS
from moalign.selection import top_k

import rl_helpers  # noqa: F401 (registers word_share)


def pool(rng, prompts=6, n=5) -> pd.DataFrame:
    """Random scores for two objectives to maximise and a constrained one (bad <= 0.5)."""
    rows = []
    for p, s in itertools.product(range(prompts), range(n)):
        rows.append({"prompt_index": p, "sample": s, "prompt": f"prompt {p}", "completion": f"answer {p}.{s}",
                     "good": rng.uniform(), "other": rng.uniform(), "bad": rng.uniform()})
    return pd.DataFrame(rows)


def config(scalarizer="weighted_sum", normalization="group") -> RewardConfig:
    return RewardConfig(objectives={"good": {"type": "word_share"}, "other": {"type": "word_share", "word": "bad"}},
                        constraints=["bad <= 0.5"], scalarizer=scalarizer, normalization=normalization)


def bad_objective():
    from moalign import register_objective

    register_objective("bad", rl_helpers.WordShare)


bad_objective()


@pytest.mark.parametrize("scalarizer", SCALARIZERS)
@pytest.mark.parametrize("normalization", ["group", "running", "none"])
def test_best_of_n_keeps_the_scalarized_argmax_among_feasible_samples(scalarizer, normalization):
    frame = pool(np.random.default_rng(0))
    cfg = config(scalarizer, normalization)
    for w in ([1, 0], [0.3, 0.7], [0, 1]):
        chosen = top_k(frame, cfg, w, 1, fallback=True)
        assert chosen["prompt_index"].tolist() == list(range(6))  # one answer a prompt
        # the same ranking computed independently: the reward's scalarisation of the whole pool
        reward = MultiObjectiveReward(RewardConfig(**{**cfg.__dict__, "weights": w}))
        score = reward.rank_scores(frame[reward.columns].to_numpy(), frame["prompt_index"].to_numpy())
        for p, group in frame.assign(score=score).groupby("prompt_index"):
            feasible = group[group["bad"] <= 0.5]
            expected = feasible.loc[feasible["score"].idxmax(), "completion"] if len(feasible) else \
                group.loc[(group["bad"] - 0.5).idxmin(), "completion"]  # none feasible: the least violating
            assert chosen.set_index("prompt_index").loc[p, "completion"] == expected


def test_a_weight_moves_the_choice_towards_its_objective():
    frame = pool(np.random.default_rng(1), prompts=40)
    mean = {w: top_k(frame, config(), [w, 1 - w], 1)[["good", "other"]].mean() for w in (0.0, 0.5, 1.0)}
    assert mean[1.0]["good"] > mean[0.5]["good"] > mean[0.0]["good"]
    assert mean[0.0]["other"] > mean[0.5]["other"] > mean[1.0]["other"]


def test_top_k_keeps_only_feasible_samples_best_first_and_never_a_missing_score():
    frame = pool(np.random.default_rng(2), prompts=8, n=6)
    frame.loc[3, "good"] = np.nan  # a dropped score is never chosen
    kept = top_k(frame, config(), [1, 0], 3)
    assert (kept["bad"] <= 0.5).all() and 3 not in kept.index
    assert (kept.groupby("prompt_index").size() <= 3).all()
    for _, group in kept.groupby("prompt_index", sort=False):
        assert group["good"].is_monotonic_decreasing  # weight 1 on good, group z-scores keep its order
    none_feasible = frame.assign(bad=1.0)
    assert top_k(none_feasible, config(), [1, 0], 2).empty  # fine-tuning learns no infeasible answer


def test_a_pool_without_an_objective_of_the_reward_is_refused_in_one_line():
    frame = pool(np.random.default_rng(3)).drop(columns=["other"])
    with pytest.raises(MoalignError, match="the pool has no scores for 'other'") as info:
        top_k(frame, config(), [1, 0], 1)
    assert "\n" not in str(info.value)


def test_best_of_n_answers_a_prompt_whose_samples_all_lack_a_score():
    """Dropped scores (on_invalid: drop) on every sample of a prompt: best-of-n still answers it (its
    least violating sample), or answers would shift to other prompts; a fine-tune keeps none of them."""
    frame = pool(np.random.default_rng(4), prompts=3, n=4)
    frame.loc[frame["prompt_index"] == 1, "good"] = np.nan
    chosen = top_k(frame, config(), [1, 0], 1, fallback=True)
    assert chosen["prompt_index"].tolist() == [0, 1, 2]
    unscored = frame[frame["prompt_index"] == 1]
    least = unscored.loc[(unscored["bad"] - 0.5).clip(lower=0).idxmin(), "sample"]
    assert chosen.set_index("prompt_index").loc[1, "sample"] == least
    assert 1 not in set(top_k(frame, config(), [1, 0], 1)["prompt_index"])
