"""Fronts that respect constraints: a policy whose constrained objective's interval lies past its
threshold is infeasible, one whose interval straddles it undecided; neither is ever non-dominated
nor adds hypervolume, however good its other scores."""
import numpy as np
import pandas as pd
import pytest

from moalign.pareto.front import hypervolume
from moalign.pareto.uncertainty import PolicyScores, feasibility
from moalign.scalarization import parse_constraint

MAX2 = ["maximize", "maximize"]


def runs_and_samples(policies: dict, n=30, seed=0):
    """{(role, weights): (a, b, c) means}; each prompt's scores scattered around them."""
    rng = np.random.default_rng(seed)
    rows, samples = [], {}
    for (role, weights), (a, b, c, spread) in policies.items():
        key = f"{role}:{weights}:s0"
        scores = np.column_stack([a + rng.normal(0, 0.05, n), b + rng.normal(0, 0.05, n), c + rng.normal(0, spread, n)])
        samples[key] = pd.DataFrame({"prompt": [f"p{i}" for i in range(n)], "completion": "",
                                     **{k: scores[:, j] for j, k in enumerate("abc")}})
        rows.append({"key": key, "role": role, "weights": weights, "seed": 0, "run_id": key,
                     **{k: scores[:, j].mean() for j, k in enumerate("abc")}})
    return pd.DataFrame(rows), samples


def test_an_infeasible_policy_is_never_non_dominated_nor_in_the_hypervolume():
    runs, samples = runs_and_samples({
        ("trained", "1,0"): (0.9, 0.9, 0.9, 0.05),     # best on both, but c <= 0.5 plainly broken
        ("trained", "0.5,0.5"): (0.5, 0.5, 0.5, 0.3),  # c's interval straddles 0.5: undecided
        ("trained", "0,1"): (0.3, 0.6, 0.2, 0.05),     # feasible
        ("base", ""): (0.6, 0.2, 0.1, 0.05),           # feasible
    })
    scores = PolicyScores(runs, samples, ["a", "b", "c"])
    ref = np.array([0.0, 0.0])
    est = scores.estimate(["a", "b"], MAX2, -ref, n_boot=200, constraints=[parse_constraint("c <= 0.5")])
    table = est.table.set_index("weights")
    assert table["feasible"].to_dict() == {"1,0": "infeasible", "0.5,0.5": "undecided", "0,1": "feasible", "": "feasible"}
    assert table["non_dominated"].to_dict() == {"1,0": False, "0.5,0.5": False, "0,1": True, "": True}
    feasible = table.loc[["0,1", ""], ["a", "b"]].to_numpy()
    assert est.hypervolume == pytest.approx(hypervolume(feasible, MAX2, -ref))
    assert est.left_out == {"infeasible": 1, "undecided": 1}
    low, high = est.hypervolume_ci
    assert low <= est.hypervolume <= high
    # without constraints the dominating policy takes the whole front
    free = scores.estimate(["a", "b"], MAX2, -ref, n_boot=200).table.set_index("weights")
    assert free["non_dominated"].to_dict() == {"1,0": True, "0.5,0.5": False, "0,1": False, "": False}


def test_a_lower_bound_constraint_reads_the_other_end_of_the_interval():
    table = pd.DataFrame({"c": [10.0, 8.2, 6.0], "c_ci_low": [9.0, 7.5, 5.0], "c_ci_high": [11.0, 9.0, 7.0]})
    assert feasibility(table, [parse_constraint("c >= 8")]) == ["feasible", "undecided", "infeasible"]
    assert feasibility(table, [parse_constraint("c <= 8")]) == ["infeasible", "undecided", "feasible"]
    # the worst verdict over constraints wins; no interval (no per-prompt scores): the mean decides
    both = [parse_constraint("c >= 8"), parse_constraint("c <= 10.5")]
    assert feasibility(table, both) == ["undecided", "undecided", "infeasible"]
    assert feasibility(table[["c"]], [parse_constraint("c >= 8")]) == ["feasible", "feasible", "infeasible"]
