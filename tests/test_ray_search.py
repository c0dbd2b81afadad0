"""Searches on Ray: every child a task on a real local cluster (127.0.0.1, 2 CPUs), started once for
this module. Children run at once, give the front the local executor gives, and a child whose
worker dies mid-training resumes from its checkpoint in the retried task.

The workers import this module (PYTHONPATH, setup hook) to know the test objectives, as a real
deployment's workers find installed objective plugins through their entry points.
"""
import os
import time
from pathlib import Path

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient

import moalign
from moalign.errors import MoalignError
from moalign.pareto.config import RayConfig, SearchConfig
from moalign.rl.config import OptimConfig, RewardConfig, TrackingConfig

from rl_helpers import WordShare, tiny_config, write_prompts

TESTS = Path(__file__).resolve().parent
OBJECTIVES = {"good": {"type": "word_share", "word": "good"}, "bad": {"type": "word_share", "word": "bad"}}


class ExitOnce(WordShare):
    """`word_share` whose worker process exits at its `at_call`-th scoring, once per `marker` file:
    a worker killed mid-step, as a lost node or the OOM killer would."""

    name = "exit_once"

    def __init__(self, word: str = "good", at_call: int = 3, marker: str = ""):
        super().__init__(word)
        self.at_call, self.marker, self.calls = at_call, marker, 0

    def _score(self, batch):
        self.calls += 1
        with open(f"{self.marker}.calls", "a") as log:
            log.write(f"{os.getpid()}\n")
        if self.calls == self.at_call and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return super()._score(batch)


class FailOnce(WordShare):
    """`word_share` that fails (one line, as a bad input would) at its `at_call`-th scoring, in
    whichever child gets there first (`marker`)."""

    name = "fail_once"

    def __init__(self, word: str = "good", at_call: int = 2, marker: str = ""):
        super().__init__(word)
        self.at_call, self.marker, self.calls = at_call, marker, 0

    def _score(self, batch):
        self.calls += 1
        if self.calls == self.at_call and not os.path.exists(self.marker):
            Path(self.marker).touch()
            raise MoalignError("objective 'good' failed on purpose")
        return super()._score(batch)


moalign.register_objective(ExitOnce)
moalign.register_objective(FailOnce)


def _setup_worker():
    import test_ray_search  # noqa: F401  (registers the test objectives in the worker)


@ray.remote(num_cpus=1)
def _warm(ready: str, model: str) -> int:
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import moalign.pareto.children  # noqa: F401
    from moalign.rl.config import ModelConfig
    from moalign.rl.policy import Policy

    Policy(ModelConfig(name=model, lora_r=8))
    Path(ready, str(os.getpid())).touch()
    deadline = time.time() + 120
    while len(os.listdir(ready)) < 2 and time.time() < deadline:  # both at once: two workers
        time.sleep(0.05)
    return os.getpid()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_llama):
    # Ray starts workers at niceness 15, below every other process of a shared machine: on busy CI
    # the children would wait for the CPU rather than for each other
    niceness = os.environ.get("RAY_worker_niceness")
    os.environ["RAY_worker_niceness"] = "0"
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}, "worker_process_setup_hook": _setup_worker})
        # both workers load the training stack now, together: otherwise the second child of a round
        # waits for its worker's imports (seconds) and two tiny trainings (seconds) never overlap
        ready = tmp_path_factory.mktemp("warm")
        assert len(set(ray.get([_warm.remote(str(ready), tiny_llama) for _ in range(2)]))) == 2
        yield
    finally:
        ray.shutdown()
        if niceness is None:
            os.environ.pop("RAY_worker_niceness", None)
        else:
            os.environ["RAY_worker_niceness"] = niceness


def search_config(model, tmp, experiment, objectives=OBJECTIVES, steps=4, **search):
    data = write_prompts(tmp / "prompts.jsonl")
    train = tiny_config(model, data, tmp, optim=OptimConfig(steps=steps, lr=2e-2), checkpoint_every=2,
                        reward=RewardConfig(objectives=objectives),
                        tracking=TrackingConfig(enabled=True, experiment=experiment, samples_every=0))
    train.data.max_eval_prompts = 4
    return SearchConfig(train=train, name=experiment, **{"strategy": "grid", "weights": [[1, 0], [0, 1]], **search})


def children_of(client, experiment, parent_id):
    exp = client.get_experiment_by_name(experiment).experiment_id
    return {r.data.tags["moalign.key"]: r for r in client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'")}


def test_children_run_at_once_and_give_the_local_front(cluster, tiny_llama, in_tmp):
    # soups: the endpoints train at once, then the two mixes (one group, split into two tasks)
    soups = {"strategy": "soups", "weights": {"method": "das-dennis", "n_partitions": 3}}
    t0 = time.perf_counter()
    on_ray = moalign.search(search_config(tiny_llama, in_tmp, "ray", executor="ray", **soups))
    t_ray = time.perf_counter() - t0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each Ray task (OMP_NUM_THREADS = its num_cpus): no oversubscribed cores
    try:
        t0 = time.perf_counter()
        local = moalign.search(search_config(tiny_llama, in_tmp, "local", **soups))
        t_local = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    print(f"2 endpoints, 2 soups, base: ray {t_ray:.1f}s, local {t_local:.1f}s")

    client = MlflowClient(f"sqlite:///{in_tmp / 'mlflow.db'}")
    runs = children_of(client, "ray", on_ray.parent_run_id)
    assert sorted(runs) == ["base", "soup:0.3333,0.6667:s0", "soup:0.6667,0.3333:s0", "train:0.0000,1.0000:s0",
                            "train:1.0000,0.0000:s0"]
    a, b = (runs[k].info for k in ("train:0.0000,1.0000:s0", "train:1.0000,0.0000:s0"))
    assert max(a.start_time, b.start_time) < min(a.end_time, b.end_time), "the two trainings did not overlap"
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    # the same seeds give the same policies, wherever they ran
    cols = ["role", "weights", "good", "bad"]
    assert on_ray.policies[cols].sort_values("weights").values.tolist() == \
        local.policies[cols].sort_values("weights").values.tolist()
    assert on_ray.hypervolume == pytest.approx(local.hypervolume)


def test_an_objective_registered_in_this_process_reaches_the_workers(cluster, tiny_llama, in_tmp):
    # defined here, as in a notebook: no module a worker could import it from, so Ray pickles it by value
    class Shouty(WordShare):
        name = "shouty_in_process"

        def _score(self, batch):
            return [float(c.count("!")) for c in batch.completions]

    moalign.register_objective(Shouty)
    try:
        objectives = {**OBJECTIVES, "good": {"type": "shouty_in_process"}}
        result = moalign.search(search_config(tiny_llama, in_tmp, "shipped", objectives, steps=2, weights=[[1, 0]],
                                              evaluate_base=False, executor="ray"))
    finally:
        from moalign.registry import _extra

        _extra.pop("shouty_in_process", None)
    client = MlflowClient(f"sqlite:///{in_tmp / 'mlflow.db'}")
    (child,) = children_of(client, "shipped", result.parent_run_id).values()
    assert child.info.status == "FINISHED" and "eval/good" in child.data.metrics


def test_a_worker_killed_mid_child_resumes_from_its_checkpoint(cluster, tiny_llama, in_tmp):
    marker = in_tmp / "killed"
    objectives = {**OBJECTIVES, "good": {"type": "exit_once", "word": "good", "at_call": 3, "marker": str(marker)}}
    config = search_config(tiny_llama, in_tmp, "kill", objectives, weights=[[1, 0]], evaluate_base=False,
                           executor="ray", ray=RayConfig(max_retries=1))
    result = moalign.search(config)
    assert marker.exists()  # the first worker died during step 3, after the checkpoint at step 2

    client = MlflowClient(f"sqlite:///{in_tmp / 'mlflow.db'}")
    (child,) = children_of(client, "kill", result.parent_run_id).values()
    assert child.info.status == "FINISHED" and child.data.metrics["train_steps"] == 4
    # the retried task continued the same run: every step logged once
    assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "loss")) == [1, 2, 3, 4]
    # scorings per worker: steps 1-3 in the one killed, then steps 3-4 and the evaluation, not 1-4 again
    pids = Path(f"{marker}.calls").read_text().split()
    assert [pids.count(p) for p in dict.fromkeys(pids)] == [3, 3]


@pytest.mark.slow  # beyond the checks; another search on the cluster (~6 s idle, minutes on a busy CI)
def test_a_failed_child_stops_the_others_and_is_the_error_raised(cluster, tiny_llama, in_tmp):
    marker = in_tmp / "failed"
    objectives = {**OBJECTIVES, "good": {"type": "fail_once", "word": "good", "at_call": 2, "marker": str(marker)}}
    config = search_config(tiny_llama, in_tmp, "fail", objectives, steps=12, evaluate_base=False, executor="ray")
    with pytest.raises(MoalignError) as info:
        moalign.search(config)
    # the child's own error, not a Ray traceback: the objective, the step, and how to continue
    assert str(info.value).startswith("step 2: objective 'good' failed on purpose; run marked FAILED")
    assert str(info.value).endswith("(continue with: re-run the same search or pipeline)")
    client = MlflowClient(f"sqlite:///{in_tmp / 'mlflow.db'}")
    (parent,) = client.search_runs([client.get_experiment_by_name("fail").experiment_id], "tags.`moalign.kind` = 'search'")
    assert parent.info.status == "FAILED"
    # the other child was interrupted as Ctrl-C interrupts it (or never started): nothing is left RUNNING
    statuses = sorted(r.info.status for r in children_of(client, "fail", parent.info.run_id).values())
    assert statuses in (["FAILED", "KILLED"], ["FAILED"]), statuses
