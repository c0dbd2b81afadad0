"""`executor: local | ray` and the `ray` section, without a cluster: the pipeline-wide default and a
search's own, `--set`, and the stores a multi-node cluster cannot share, refused before anything runs."""
import pytest
import yaml

import moalign
from moalign.cli import main
from moalign.errors import ConfigError
from moalign.pareto.config import RayConfig, SearchConfig
from moalign.pareto.search import search_id
from moalign.pipeline import load_pipeline
from moalign.rl.config import RewardConfig, TrackingConfig

from rl_helpers import tiny_config, write_prompts

OBJECTIVES = {"good": {"type": "word_share", "word": "good"}, "bad": {"type": "word_share", "word": "bad"}}


def pipeline(tmp_path, **top) -> dict:
    return {"experiment": "ray", "train": {"model": {"name": "unused", "lora_r": 8},
                                           "data": {"train": write_prompts(tmp_path / "p.jsonl")},
                                           "reward": {"objectives": OBJECTIVES}, "output_dir": str(tmp_path / "runs")},
            "searches": [{"strategy": "grid", "weights": [[1, 0]]},
                         {"strategy": "soups", "weights": [[1, 0]], "executor": "local"},
                         {"strategy": "grid", "weights": [[0, 1]], "ray": {"num_gpus": 1}}],
            "report": {"enabled": False}, **top}


def test_the_pipeline_default_applies_where_a_search_sets_none(tmp_path):
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(pipeline(tmp_path, executor="ray", ray={"num_cpus": 2})))
    _, searches = load_pipeline(path)
    assert [s.executor for s in searches] == ["ray", "local", "ray"]
    assert [(s.ray.num_cpus, s.ray.num_gpus) for s in searches] == [(2, 0), (2, 0), (1, 1)]
    path.write_text(yaml.safe_dump(pipeline(tmp_path)))
    _, searches = load_pipeline(path, ["executor=ray", "ray.max_retries=0"])
    assert [s.executor for s in searches] == ["ray", "local", "ray"] and searches[0].ray.max_retries == 0
    _, searches = load_pipeline(path)
    assert [s.executor for s in searches] == ["local", "local", "local"]


@pytest.mark.parametrize("top, message", [
    ({"executor": "dask"}, "executor must be one of local, ray, got 'dask'"),
    ({"ray": {"num_gpus": -1}}, "ray.num_gpus: expected a number >= 0, got -1"),
    ({"ray": {"adress": "auto"}}, "unknown key 'ray.adress'"),
])
def test_bad_executor_settings_are_one_line(top, message, tmp_path):
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(pipeline(tmp_path, **top)))
    with pytest.raises(ConfigError, match="pipe.yaml: ") as info:
        load_pipeline(path)
    assert message in str(info.value)


@pytest.mark.parametrize("uri", [None, "sqlite:///shared/mlflow.db", "file:///shared/mlruns", "/shared/mlruns"])
def test_a_store_on_this_machine_is_refused_with_a_cluster_address(uri, tiny_llama, in_tmp, capsys):
    train = {"tracking": {"tracking_uri": uri}} if uri else {}
    path = in_tmp / "pipe.yaml"
    spec = pipeline(in_tmp, executor="ray", ray={"address": "ray://10.0.0.1:10001"})
    spec["train"].update(train, model={"name": tiny_llama, "lora_r": 8})
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", "pipe.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pipe.yaml: train.tracking.tracking_uri: " in err
    assert "use an MLflow server (http://host:port)" in err and "ray://10.0.0.1:10001" in err
    assert not (in_tmp / "mlflow.db").exists()


def test_a_search_refuses_before_any_run_what_other_nodes_cannot_reach(tiny_llama, in_tmp):
    train = tiny_config(tiny_llama, write_prompts(in_tmp / "p.jsonl"), in_tmp,
                        reward=RewardConfig(objectives=OBJECTIVES), tracking=TrackingConfig(enabled=True))
    config = SearchConfig(train=train, weights=[[1, 0]], executor="ray", ray=RayConfig(address="auto"))
    with pytest.raises(ConfigError, match=r"sqlite:///.*mlflow.db is a store on this machine"):
        moalign.search(config)
    assert not (in_tmp / "mlflow.db").exists()
    train.tracking.tracking_uri = "http://mlflow.internal:5000"
    train.output_dir = "runs"
    with pytest.raises(ConfigError, match="train.output_dir: 'runs' is relative; with ray.address every node"):
        moalign.search(config)


def test_a_search_is_the_same_search_under_either_executor(tiny_llama, tmp_path):
    """So a search started locally resumes on Ray (and the reverse), and finds its parent run."""
    train = tiny_config(tiny_llama, "p.jsonl", tmp_path, reward=RewardConfig(objectives=OBJECTIVES))
    local = SearchConfig(train=train, weights=[[1, 0]])
    on_ray = SearchConfig(train=train, weights=[[1, 0]], executor="ray", ray=RayConfig(num_cpus=2, max_retries=0))
    assert search_id(local) == search_id(on_ray)


def test_each_evaluation_of_a_group_is_its_own_task_and_the_group_is_joined_back():
    """A seed's soups come as one run_eval call over the group; on Ray each is a task of its own."""
    import functools

    from moalign.pareto.children import run_eval, run_train
    from moalign.pareto.executors import _one_child_each, _regroup

    calls = [functools.partial(run_train, "ctx", "t"), functools.partial(run_eval, "ctx", ["a", "b", "c"]),
             functools.partial(run_eval, "ctx", ["base"])]
    flat, spans = _one_child_each(calls)
    assert [(c.func, c.args) for c in flat] == [(run_train, ("ctx", "t")), (run_eval, ("ctx", ["a"])),
                                                (run_eval, ("ctx", ["b"])), (run_eval, ("ctx", ["c"])),
                                                (run_eval, ("ctx", ["base"]))]
    # run_train returns (row, samples), run_eval a list of them, one per unit
    results = [("t", None), [("a", None)], [("b", None)], [("c", None)], [("base", None)]]
    assert _regroup(results, spans) == [("t", None), [("a", None), ("b", None), ("c", None)], [("base", None)]]


def test_the_objectives_a_search_ships_are_those_its_config_names(tiny_llama, tmp_path):
    """Only these travel to the workers: another registered class, say one from a module the
    workers lack, must not break the search's tasks."""
    from moalign.pareto.executors import make_executor

    train = tiny_config(tiny_llama, "p.jsonl", tmp_path,
                        reward=RewardConfig(objectives={"good": {"type": "word_share"}, "verbosity": {}},
                                            constraints=["toxicity <= 0.1"]))
    train.eval_objectives = {"len": {"type": "verbosity", "unit": "chars"}, "rouge_l": {}}
    executor = make_executor(SearchConfig(train=train, weights=[[1, 0]], executor="ray"))
    assert executor.objective_types == {"word_share", "verbosity", "toxicity", "rouge_l"}
    assert make_executor(SearchConfig(train=train, weights=[[1, 0]])) is None  # local: nothing to ship


def test_a_ray_address_that_cannot_work_is_refused_before_any_run(tiny_llama, in_tmp):
    """Ray itself retries an address where nothing listens for minutes, a log line every few seconds,
    and only after the parent run exists; ray:// needs the client extra (grpcio)."""
    import importlib.util

    from mlflow_server import free_port

    train = tiny_config(tiny_llama, write_prompts(in_tmp / "p.jsonl"), in_tmp, reward=RewardConfig(objectives=OBJECTIVES),
                        tracking=TrackingConfig(enabled=True, tracking_uri="http://127.0.0.1:1"))
    train.output_dir = str(in_tmp / "runs")
    port = free_port()
    config = SearchConfig(train=train, weights=[[1, 0]], executor="ray", ray=RayConfig(address=f"127.0.0.1:{port}"))
    with pytest.raises(ConfigError, match=rf"ray.address '127.0.0.1:{port}': nothing answers at 127.0.0.1:{port}") as info:
        moalign.search(config)
    assert "\n" not in str(info.value)
    config.ray.address = f"ray://127.0.0.1:{port}"
    expected = "needs Ray's client" if importlib.util.find_spec("grpc") is None else "nothing answers"
    with pytest.raises(ConfigError, match=expected):
        moalign.search(config)
    assert not (in_tmp / "runs").exists() and not (in_tmp / "mlflow.db").exists()
