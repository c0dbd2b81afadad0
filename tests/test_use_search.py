"""Policy references: every policy on a search's front is found by run id or by
EXPERIMENT/SEARCH@weights[:sSEED], as searches record their children (soups name their endpoints,
reused runs are listed on the parent) and as they did before (endpoints found among the soup's
siblings, reused runs copied into a child that points to the original).

`finished_searches` (shared by the tests/test_use_*.py modules) runs one small soups search and a
grid that reuses one of its endpoints, once per test session.
"""
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import pandas as pd
from mlflow.tracking import MlflowClient

import moalign
from moalign.errors import MoalignError
from moalign.pareto.config import SearchConfig
from moalign.policies import find_policy
from moalign.rl.config import OptimConfig, RewardConfig, TrackingConfig

from rl_helpers import tiny_config, write_prompts

OBJECTIVES = {"good": {"type": "word_share", "word": "good"}, "bad": {"type": "word_share", "word": "bad"}}
_BUILT = {}


def finished_searches(tmp_path_factory, tiny_llama) -> SimpleNamespace:
    """Experiment `use`: the search `soups` (endpoints 1,0 and 0,1, soup 0.5,0.5, base) and the
    search `grid` at 1,0 only, which reuses the soups' endpoint instead of training it again."""
    if "searches" not in _BUILT:
        tmp = tmp_path_factory.mktemp("use_front")
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        data = write_prompts(tmp / "prompts.jsonl")
        train = tiny_config(tiny_llama, data, tmp, optim=OptimConfig(steps=2, lr=2e-2), checkpoint_every=2,
                            reward=RewardConfig(objectives=OBJECTIVES),
                            tracking=TrackingConfig(enabled=True, experiment="use", tracking_uri=uri, samples_every=0))
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(tmp)  # nothing lands in the working tree
            soups = moalign.search(SearchConfig(train=train, strategy="soups", name="soups",
                                                weights={"method": "das-dennis", "n_partitions": 2}))
            grid = moalign.search(SearchConfig(train=train, strategy="grid", name="grid", weights=[[1, 0]],
                                               evaluate_base=False))
        keys = dict(zip(soups.runs["key"], soups.runs["run_id"]))
        _BUILT["searches"] = SimpleNamespace(tmp=tmp, uri=uri, data=data, model=tiny_llama, soups=soups, grid=grid,
                                             trained=keys["train:1.0000,0.0000:s0"], other=keys["train:0.0000,1.0000:s0"],
                                             soup=keys["soup:0.5000,0.5000:s0"], base=keys["base"])
    return _BUILT["searches"]


@pytest.fixture(scope="module")
def front(tmp_path_factory, tiny_llama):
    return finished_searches(tmp_path_factory, tiny_llama)


def test_search_refs_name_every_policy_on_the_front(front):
    def found(ref):
        return find_policy(ref, front.uri)

    soup = found("use/soups@0.5,0.5")
    assert (soup.role, soup.run_id, soup.weights) == ("soup", front.soup, [0.5, 0.5])
    assert soup.sources == [front.trained, front.other]  # endpoints in objective order
    assert found("use/soups@1,0").run_id == found("use/soups@1.0000,0.0000:s0").run_id == front.trained
    assert (found("use/soups@base").role, found("use/soups@base").run_id) == ("base", front.base)
    assert found("use/soups@base").model.name == front.model  # read from the search's training runs
    # the grid reused the soups' endpoint: on its front, that same run
    assert front.grid.runs["run_id"].tolist() == [front.trained]
    reused = found("use/grid@1,0")
    assert (reused.run_id, reused.sources) == (front.trained, [front.trained])
    assert found(front.soup).run_id == front.soup and found(front.base).role == "base"


@pytest.mark.parametrize("ref, message", [
    ("use/soups@0.3,0.7", "search use/soups has no policy at weights 0.3,0.7 (its weights: 0.0000,1.0000; "
                          "0.5000,0.5000; 1.0000,0.0000; or base)"),
    ("use/soups@1,0,0", "no policy at weights 1,0,0"),
    ("use/soups@1,0:s3", "policy 1.0000,0.0000 has no run for seed 3 (seeds: 0)"),
    ("use/soups@good", "policy 'good' of search use/soups: expected comma-separated weights or 'base'"),
    ("use/other@1,0", "experiment 'use' has no search named 'other' (searches: grid, soups)"),
    ("nope/soups@1,0", "experiment 'nope' not found"),
    ("use/soups", "expected an MLflow run id, EXPERIMENT/SEARCH@W1,W2[:sSEED]"),
    ("0123456789abcdef0123456789abcdef", "read run 0123456789abcdef0123456789abcdef failed"),
])
def test_bad_refs_are_one_line_naming_what_is_wrong(front, ref, message):
    with pytest.raises(MoalignError) as info:
        find_policy(ref, front.uri)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_search_run_is_not_a_policy(front):
    with pytest.raises(MoalignError, match=r"is the search 'soups', not a policy: .* e.g. use/soups@base"):
        find_policy(front.soups.parent_run_id, front.uri)


def test_refs_read_searches_recorded_before_soups_named_endpoints_and_reuse_was_listed(front, tmp_path):
    """The earlier layout: a soup's endpoints are its siblings at the one-hot weights, and a reused
    run is a child of its own, copied from the original (`moalign.reused_from`)."""
    shutil.copy(front.tmp / "mlflow.db", tmp_path / "mlflow.db")  # the artifacts stay where they are
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.delete_tag(front.soup, "moalign.endpoints")
    client.delete_tag(front.grid.parent_run_id, "moalign.reused")
    experiment = client.get_run(front.trained).info.experiment_id
    copy = client.create_run(experiment, run_name="trained:1.0000,0.0000:s0", tags={
        "mlflow.parentRunId": front.grid.parent_run_id, "moalign.key": "train:1.0000,0.0000:s0",
        "moalign.role": "trained", "moalign.seed": "0", "moalign.reused_from": front.trained}).info.run_id
    client.set_terminated(copy, "FINISHED")

    soup = find_policy("use/soups@0.5,0.5", uri)
    assert (soup.run_id, soup.sources, soup.weights) == (front.soup, [front.trained, front.other], [0.5, 0.5])
    reused = find_policy("use/grid@1,0", uri)
    assert (reused.run_id, reused.sources, reused.weights) == (copy, [front.trained], [1.0, 0.0])


def test_front_policies_lists_each_policy_with_the_ref_that_loads_it(front):
    from moalign.policies import front_policies

    table = front_policies("use/soups", front.uri)
    assert sorted(table["ref"]) == ["use/soups@0.0000,1.0000", "use/soups@0.5000,0.5000", "use/soups@1.0000,0.0000",
                                    "use/soups@base"]
    assert {"good", "good_ci_low", "good_ci_high", "bad", "non_dominated", "run_ids"} <= set(table.columns)
    for ref, run_ids in zip(table["ref"], table["run_ids"]):
        assert find_policy(ref, front.uri).run_id == run_ids.split(",")[0]
    with pytest.raises(MoalignError, match="expected EXPERIMENT/SEARCH"):
        front_policies("soups", front.uri)


def test_the_real_news_check_scores_every_policy_of_a_front_on_new_texts(front, tmp_path):
    """benchmarks/real_news.py: each policy of the front (every seed) answers the articles at both
    length caps; means with intervals, and the extremes compared."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("real_news", Path(__file__).parents[1] / "benchmarks" / "real_news.py")
    real_news = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real_news)
    corpus = tmp_path / "news.txt"
    corpus.write_text("The council voted to close the bridge. Repairs start in May.\n"
                      "A storm cut power to the town. Crews worked all night.\n\nThe cat sat on the mat all day.\n")
    assert real_news.main(["--search", "use/soups", "--tracking-uri", front.uri, "--corpus", str(corpus),
                           "--long-tokens", "9", "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "real_news.csv", dtype={"weights": str})
    assert sorted(table["max_new_tokens"].unique()) == [8, 9]  # the search's own cap, then the long one
    assert len(table) == 2 * 4  # base, two endpoints, the soup
    for o in real_news.MEASURES:
        assert (table[f"{o}_ci_low"] <= table[o] + 1e-9).all() and (table[o] <= table[f"{o}_ci_high"] + 1e-9).all()
    samples = pd.read_json(tmp_path / "out" / "real_news_samples.jsonl", lines=True)
    assert len(samples) == 2 * 4 * 3 and samples["completion"].map(lambda c: isinstance(c, str)).all()
    text = (tmp_path / "out" / "real_news.md").read_text()
    assert "extremes 1.0000,0.0000 vs 0.0000,1.0000 on verbosity" in text
    # the tables again from the saved samples, nothing generated
    assert real_news.main(["--search", "use/soups", "--tracking-uri", front.uri, "--out", str(tmp_path / "again"),
                           "--tabulate", str(tmp_path / "out" / "real_news_samples.jsonl")]) == 0
    again = (tmp_path / "again" / "real_news.md").read_text()
    assert again.split("\n", 1)[1] == text.split("\n", 1)[1]  # all but the title, which names the samples file
