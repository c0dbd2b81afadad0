"""Reward-hacking flags on a hand-made search (no training, no MLflow): each check by hand, the
thresholds as config, the flags in the tables and as red rings on both front figures."""
import numpy as np
import pandas as pd
import pytest

from moalign.errors import ConfigError
from moalign.pareto.uncertainty import PolicyScores
from moalign.reports import build, interactive, plots
from moalign.reports.collect import Search
from moalign.reports.flags import FlagConfig, legend, policy_checks, with_flags

DIRS = {"chrf": "maximize", "verbosity": "minimize", "likelihood": "maximize"}
VARIED = [f"summary {i} of text number {i}" for i in range(10)]  # 5 bigrams each (distinct-2 by hand below)
SAME = ["the council voted yes"] * 10  # 3 bigrams, all the same across prompts


def _run(key, role, weights, seed, chrf, words, ll):
    return {"key": key, "role": role, "weights": weights, "seed": seed, "run_id": key, "chrf": chrf,
            "verbosity": words, "likelihood": ll, "train_steps": 0 if role == "base" else 10, "wall_time_s": 1.0}


def hand_made_search() -> Search:
    runs = pd.DataFrame([
        _run("base", "base", "", 0, 40.0, 20.0, -0.5),
        _run("hack0", "trained", "1.0000,0.0000", 0, 60.0, 4.0, -2.0),  # far from the base: L, K, D
        _run("hack1", "trained", "1.0000,0.0000", 1, 62.0, 4.0, -1.8),
        _run("fine0", "trained", "0.5000,0.5000", 0, 50.0, 12.0, -0.9),
        _run("fine1", "trained", "0.5000,0.5000", 1, 52.0, 12.0, -0.7),
        _run("soup0", "soup", "0.2500,0.7500", 0, 45.0, 1.0, -0.6),  # one-word answers: S, and no bigram: D
        _run("soup1", "soup", "0.2500,0.7500", 1, 45.0, 1.0, -0.6),
    ])
    samples = {k: pd.DataFrame({"prompt": [f"p{i}" for i in range(10)], "completion": texts})
               for k, texts in [("base", VARIED), ("hack0", SAME), ("hack1", SAME), ("fine0", VARIED),
                                ("fine1", VARIED[::-1]), ("soup0", ["ok"] * 10), ("soup1", ["yes"] * 10)]}
    kl = {"hack0": pd.Series({1: 0.1, 2: 0.3, 3: 0.5, 4: 0.6}), "hack1": pd.Series({1: 0.2, 2: 0.4, 3: 0.4, 4: 0.5}),
          "fine0": pd.Series({1: 0.0, 2: 0.05, 3: 0.1, 4: 0.1}), "fine1": pd.Series({1: 0.0, 2: 0.1, 3: 0.1, 4: 0.1})}
    scores = PolicyScores(runs, {}, list(DIRS))
    policies = scores.estimate(["chrf", "verbosity"], ["maximize", "minimize"], np.array([0.0, 30.0])).table
    return Search("r1", "grid", "grid", ["chrf", "verbosity"], DIRS, {}, policies, runs, scores,
                  run_samples=samples, kl=kl)


def checks_by_policy(search, cfg=None) -> pd.DataFrame:
    checks = policy_checks(search.policies, search.runs, search.run_samples, search.kl, cfg)
    return checks.set_index(checks["role"] + " " + checks["weights"])


def test_each_check_by_hand():
    c = checks_by_policy(hand_made_search())
    # VARIED: bigrams (summary i) (i of) (of text) (text number) (number i); "of text" and "text
    # number" recur in all 10, so 3 of each completion's own + 2 shared = 32 distinct of 50
    assert c.loc["base ", "distinct-2"] == pytest.approx(32 / 50)
    assert c.loc["trained 1.0000,0.0000", "distinct-2"] == pytest.approx(3 / 30)  # one answer for every prompt
    assert c.loc["trained 1.0000,0.0000", "distinct-2 / base"] == pytest.approx((3 / 30) / (32 / 50))
    assert c.loc["trained 1.0000,0.0000", "likelihood vs base"] == pytest.approx(-1.9 + 0.5)  # mean over seeds
    # KL: mean of each run's last 3 steps, (0.3+0.5+0.6)/3 and (0.4+0.4+0.5)/3, then over seeds
    assert c.loc["trained 1.0000,0.0000", "kl"] == pytest.approx(((1.4 / 3) + (1.3 / 3)) / 2)
    assert c.loc["trained 0.5000,0.5000", "kl"] == pytest.approx(((0.25 / 3) + (0.3 / 3)) / 2)
    assert c.loc["soup 0.2500,0.7500", "median words"] == 1.0
    assert np.isnan(c.loc["soup 0.2500,0.7500", "kl"]) and np.isnan(c.loc["base ", "kl"])  # never trained
    assert c["flags"].to_dict() == {"base ": "", "trained 1.0000,0.0000": "LKD", "trained 0.5000,0.5000": "",
                                    "soup 0.2500,0.7500": "DS"}


def test_thresholds_are_config():
    search = hand_made_search()
    loose = checks_by_policy(search, FlagConfig(likelihood_drop=2.0, kl_budget=0.5, diversity_ratio=0.0,
                                                min_median_words=1))
    assert (loose["flags"] == "").all()
    strict = checks_by_policy(search, FlagConfig(likelihood_drop=0.1, kl_budget=0.05))
    assert strict.loc["trained 0.5000,0.5000", "flags"] == "LK"
    assert legend(FlagConfig(kl_budget=0.5))[1].startswith("K: KL to the reference above the budget of 0.5 nat/token")
    with pytest.raises(ConfigError, match=r"^report.flags.likelihood_drop: expected a number >= 0, got -1"):
        FlagConfig(likelihood_drop=-1)
    with pytest.raises(ConfigError, match=r"^report.flags.kl_steps: expected an integer >= 1, got 0.5"):
        FlagConfig(kl_steps=0.5)
    with pytest.raises(ConfigError, match=r"^report.flags.diversity_ratio"):
        FlagConfig(diversity_ratio=1.5)


def test_without_a_base_model_or_likelihood_nothing_is_compared():
    search = hand_made_search()
    keep = search.runs["role"] != "base"
    runs = search.runs[keep].drop(columns="likelihood")
    policies = search.policies[search.policies["role"] != "base"].drop(columns="likelihood")
    checks = policy_checks(policies, runs, search.run_samples, search.kl)
    assert checks["likelihood vs base"].isna().all() and checks["distinct-2 / base"].isna().all()
    assert checks["flags"].tolist() == ["K", "", "S"]  # KL and length need no base


def test_flags_in_the_tables_and_as_red_rings_on_the_fronts():
    search = hand_made_search()
    checks = policy_checks(search.policies, search.runs, search.run_samples, search.kl)
    table = with_flags(search.policies, checks)
    assert build._policy_table(Search(**{**search.__dict__, "policies": table}))["flags"].tolist() == ["", "LKD", "", "DS"]
    shown, lines = build._check_section(checks, FlagConfig())
    assert shown["flags"].tolist() == ["-", "LKD", "-", "DS"] and shown.loc[0, "kl"] == "n/a"
    assert lines[0].startswith("2 of 4 policies flagged") and [x[0] for x in lines[1:]] == list("LKDS")

    fig = plots.pareto_pairs_figure({"grid": table}, ["chrf", "verbosity"], DIRS)
    ax = fig.get_axes()[0]
    rings = [c for c in ax.collections if c.get_label() == "reward-hacking flag"]
    assert len(rings) == 1 and sorted(map(tuple, rings[0].get_offsets())) == [(45.0, 1.0), (61.0, 4.0)]
    assert {t.get_text() for t in ax.texts} >= {"LKD", "DS"}

    fig = interactive.front_figure({"grid": (table, {})}, ["chrf", "verbosity"], DIRS)
    (ring,) = [t for t in fig.data if t.name == "reward-hacking flag"]
    assert list(ring.text) == ["LKD", "DS"] and list(ring.x) == [61.0, 45.0] and ring.marker.color == "red"
    assert "reward-hacking flags: LKD" in ring.hovertext[0]


def test_no_flags_no_rings():
    search = hand_made_search()
    fig = interactive.front_figure({"grid": (search.policies, {})}, ["chrf", "verbosity"], DIRS)
    assert not [t for t in fig.data if t.name == "reward-hacking flag"]
    ax = plots.pareto_pairs_figure({"grid": search.policies}, ["chrf", "verbosity"], DIRS).get_axes()[0]
    assert not [c for c in ax.collections if c.get_label() == "reward-hacking flag"]
