"""Front uncertainty on hand-made per-prompt scores: means over seeds, bootstrap intervals (checked
against scipy where one axis is resampled), hypervolume of the means and its interval."""
import numpy as np
import pandas as pd
import pytest
from pymoo.indicators.hv import HV
from scipy import stats

from moalign import MoalignError
from moalign.pareto.uncertainty import PolicyScores, prompt_means

MAX2 = ["maximize", "maximize"]


def front(policies: dict, prompts=None) -> tuple[pd.DataFrame, dict]:
    """runs and samples from {(role, weights): {seed: [[a, b] per prompt]}}."""
    rows, samples = [], {}
    for (role, weights), by_seed in policies.items():
        for seed, scores in by_seed.items():
            scores = np.asarray(scores, dtype=float)
            key = f"{role}:{weights}:s{seed}"
            names = prompts or [f"p{i}" for i in range(len(scores))]
            samples[key] = pd.DataFrame({"prompt": names, "completion": "", "a": scores[:, 0], "b": scores[:, 1]})
            rows.append({"key": key, "role": role, "weights": weights, "seed": seed, "run_id": f"id-{key}",
                         "a": scores[:, 0].mean(), "b": scores[:, 1].mean(), "train_steps": 4, "wall_time_s": 1.0})
    return pd.DataFrame(rows), samples


def test_prompt_means_average_a_prompts_generations_first():
    samples = pd.DataFrame({"prompt": ["x", "y", "x", "y"], "completion": "", "a": [1.0, 4.0, 3.0, np.nan]})
    means = prompt_means(samples, ["a"])
    assert means.index.tolist() == ["x", "y"] and means["a"].tolist() == [2.0, 4.0]  # NaN (dropped) left out
    with pytest.raises(MoalignError, match="no column 'b'"):
        prompt_means(samples, ["b"])


def test_one_seed_interval_is_scipys_percentile_bootstrap_over_prompts():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(40, 2))
    runs, samples = front({("trained", "1,0"): {0: scores}})
    est = PolicyScores(runs, samples, ["a", "b"]).estimate(["a", "b"], MAX2, np.array([5.0, 5.0]), n_boot=20_000)
    row = est.table.iloc[0]
    for m, name in enumerate("ab"):
        ref = stats.bootstrap((scores[:, m],), np.mean, n_resamples=20_000, method="percentile", random_state=1)
        assert row[name] == pytest.approx(scores[:, m].mean())
        assert row[f"{name}_ci_low"] == pytest.approx(ref.confidence_interval.low, abs=0.02)
        assert row[f"{name}_ci_high"] == pytest.approx(ref.confidence_interval.high, abs=0.02)
    assert est.n_prompts == 40 and est.n_seeds == 1


def test_seeds_are_resampled_and_a_single_run_stands_for_every_seed():
    flat = np.full((10, 2), 0.5)
    runs, samples = front({("base", ""): {0: flat},
                           ("trained", "1,0"): {0: flat - 0.3, 1: flat, 2: flat + 0.3}})
    scores = PolicyScores(runs, samples, ["a", "b"])
    assert scores.seeds == [0, 1, 2] and scores.X.shape == (2, 3, 10, 2)
    table = scores.estimate(["a", "b"], MAX2, np.zeros(2)).table.set_index("role")
    # every prompt scores the same, so all the spread comes from the seeds: mean 0.5, and a mean of
    # three seeds drawn from {0.2, 0.5, 0.8} falls outside [0.3, 0.7] with 7/27 > 5% probability
    assert table.loc["trained", "a"] == pytest.approx(0.5) and table.loc["trained", "n_seeds"] == 3
    assert table.loc["trained", "a_ci_low"] < 0.3 and table.loc["trained", "a_ci_high"] > 0.7
    # the base model was evaluated once: redrawing seeds does not move it
    assert table.loc["base", "a_ci_low"] == table.loc["base", "a_ci_high"] == 0.5
    assert table.loc["trained", "train_steps"] == 12 and table.loc["trained", "seeds"] == "0,1,2"
    # one training seed that is not the base model's: the front rests on that seed
    runs, samples = front({("base", ""): {0: flat}, ("trained", "1,0"): {5: flat}})
    assert PolicyScores(runs, samples, ["a", "b"]).seeds == [5]


def test_front_and_hypervolume_are_those_of_the_means():
    runs, samples = front({
        ("trained", "1,0"): {0: [[0.9, 0.1]] * 4, 1: [[0.1, 0.1]] * 4},  # mean (0.5, 0.1)
        ("trained", "0,1"): {0: [[0.4, 0.4]] * 4, 1: [[0.4, 0.4]] * 4},  # mean (0.4, 0.4)
        ("soup", "0.5,0.5"): {0: [[0.8, 0.0]] * 4, 1: [[0.1, 0.1]] * 4},  # mean (0.45, 0.05): dominated
    })
    est = PolicyScores(runs, samples, ["a", "b"]).estimate(["a", "b"], MAX2, np.zeros(2))
    assert est.table["non_dominated"].tolist() == [True, True, False]
    means = np.array([[0.5, 0.1], [0.4, 0.4], [0.45, 0.05]])
    assert est.hypervolume == pytest.approx(HV(ref_point=np.zeros(2)).do(-means))
    # by hand: 0.4 * 0.4 + (0.5 - 0.4) * 0.1
    assert est.hypervolume == pytest.approx(0.17)


def test_hypervolume_interval_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    runs, samples = front({("trained", "1,0"): {0: rng.uniform(0.5, 1.0, (30, 2)) * [1, 0.3]},
                           ("trained", "0,1"): {0: rng.uniform(0.5, 1.0, (30, 2)) * [0.3, 1]}})
    scores = PolicyScores(runs, samples, ["a", "b"])
    hv, (low, high) = scores.hypervolume(["a", "b"], MAX2, np.zeros(2), n_boot=2000, seed=1)
    assert low < hv < high and high - low > 0.01
    assert scores.hypervolume(["a", "b"], MAX2, np.zeros(2), n_boot=2000, seed=1)[1] == (low, high)
    assert scores.hypervolume(["a", "b"], MAX2, np.zeros(2), n_boot=2000, seed=2)[1] != (low, high)


def test_intervals_are_clipped_to_the_objectives_bounds():
    # scores an objective let slip past its declared upper bound 1 (a float-rounding ROUGE of 1.0000001)
    runs, samples = front({("trained", "1,0"): {0: [[1.0000001, 0.2], [0.9, 0.4], [1.0000001, 0.3]]}})
    table = PolicyScores(runs, samples, ["a", "b"]).estimate(["a", "b"], MAX2, np.zeros(2),
                                                              bounds={"a": (0.0, 1.0), "b": (None, None)}).table
    assert table.loc[0, "a_ci_high"] == 1.0 and table.loc[0, "b_ci_high"] > 0.3


def test_without_every_runs_samples_there_are_means_but_no_intervals():
    runs, samples = front({("trained", "1,0"): {0: [[0.2, 0.4], [0.4, 0.6]]}, ("trained", "0,1"): {0: [[0.1, 0.9]] * 2}})
    samples["trained:0,1:s0"] = None  # logged before per-sample tables were kept
    est = PolicyScores(runs, samples, ["a", "b"]).estimate(["a", "b"], MAX2, np.zeros(2))
    assert est.table["a"].tolist() == pytest.approx([0.3, 0.1]) and est.table["a_ci_low"].isna().all()
    assert np.isnan(est.hypervolume_ci).all() and est.n_prompts == 0 and est.hypervolume > 0


def test_runs_on_other_prompts_or_missing_seeds_are_refused():
    runs, samples = front({("trained", "1,0"): {0: [[0.2, 0.4]] * 2}, ("trained", "0,1"): {0: [[0.1, 0.9]] * 2}})
    samples["trained:0,1:s0"]["prompt"] = ["p0", "other"]
    with pytest.raises(MoalignError, match="evaluated on other prompts"):
        PolicyScores(runs, samples, ["a", "b"])
    runs, samples = front({("trained", "1,0"): {0: [[0.2, 0.4]], 1: [[0.2, 0.4]], 2: [[0.2, 0.4]]},
                           ("trained", "0,1"): {0: [[0.1, 0.9]], 2: [[0.1, 0.9]]}})
    with pytest.raises(MoalignError, match=r"runs for seeds \[0, 2\], expected one run or one for each of \[0, 1, 2\]"):
        PolicyScores(runs, samples, ["a", "b"])
