"""A search on a multi-node Ray cluster, tracked to an MLflow server, as a deployment runs one
(README "Scale out"): `ray.address` names the cluster, `train.output_dir` is absolute and the
tracking URI is `http://`. The nodes are simulated on this machine as Ray's own tests do
(`ray.cluster_utils.Cluster`: a head and a second node, 1 CPU each, each with a resource of its
own), so two children at once run on different nodes, and both must reach the one server.

The workers import this module (PYTHONPATH given to the nodes) for its objective, as a real
deployment's workers find installed objective plugins through their entry points.
"""
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

import moalign
from moalign.errors import ConfigError
from moalign.objectives.overlap import Chrf
from moalign.pareto.config import RayConfig, SearchConfig
from moalign.pareto.executors import RayExecutor
from moalign.rl.config import OptimConfig, RewardConfig, TrackingConfig

from mlflow_server import MlflowServer
from rl_helpers import tiny_config, write_prompts

TESTS = Path(__file__).resolve().parent
NODES = ("head_node", "second_node")  # each node's own custom resource: which node is which


class NodeChrf(Chrf):
    """`chrf` that appends the Ray node it scores on to `log` (nothing outside Ray)."""

    name = "node_chrf"

    def __init__(self, log: str = ""):
        super().__init__()
        self.log = log

    def _score(self, batch):
        if ray.is_initialized():
            with open(self.log, "a") as out:
                out.write(f"{ray.get_runtime_context().get_node_id()}\n")
        return super()._score(batch)


moalign.register_objective(NodeChrf)


@ray.remote(num_cpus=1)
def _warm(model: str) -> str:
    """Load the training stack in this node's worker, which then runs the node's child."""
    import moalign.pareto.children  # noqa: F401
    from moalign.rl.config import ModelConfig
    from moalign.rl.policy import Policy

    Policy(ModelConfig(name=model, lora_r=8))
    return ray.get_runtime_context().get_node_id()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, tiny_llama):
    """(the cluster's address, the MLflow server's URL), this process connected to the cluster by
    the executor itself. The two start at once (each takes seconds), and while the server starts
    each node's worker loads the training stack (seconds more, which the search's children would
    otherwise spend before they start).

    The cluster has its own RAY_TMPDIR: a Cluster writes its address to the temp dir's
    `ray_current_cluster` (and deletes it on shutdown), where a plain `ray.init()` (that of
    tests/test_ray_search.py, in a parallel pytest worker) would find and join it."""
    temp = tempfile.mkdtemp(prefix="ray_mn")  # short: Ray's socket paths live under it
    # every node's raylet, so its workers: import this module, yield no CPU (as in test_ray_search)
    node_env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
                "RAY_worker_niceness": "0"}
    with pytest.MonkeyPatch.context() as env, ThreadPoolExecutor(1) as pool:
        env.setenv("RAY_TMPDIR", temp)
        env.delenv("RAY_ADDRESS", raising=False)
        starting = pool.submit(MlflowServer, tmp_path_factory.mktemp("mlflow_server"))
        nodes = Cluster()
        try:
            nodes.add_node(num_cpus=1, resources={NODES[0]: 1}, include_dashboard=False, env_vars=node_env)
            nodes.add_node(num_cpus=1, resources={NODES[1]: 1}, env_vars=node_env)
            nodes.wait_for_nodes()
            RayExecutor(RayConfig(address=nodes.address))._connect()  # as the search would
            assert ray.get_runtime_context().gcs_address == nodes.address  # this cluster, not a new local one
            warmed = [_warm.options(resources={node: 1}).remote(tiny_llama) for node in NODES]
            assert len(set(ray.get(warmed))) == 2
            yield nodes.address, starting.result().url
        finally:
            ray.shutdown()
            nodes.shutdown()
            if starting.exception() is None:  # waits for it
                starting.result().stop()
            shutil.rmtree(temp, ignore_errors=True)


def search_config(model, tmp, experiment, tracking_uri, log, output_dir=None, **search):
    data = write_prompts(tmp / "prompts.jsonl")
    # scores that vary with every completion, so that equal fronts mean equal policies
    objectives = {"chrf": {"type": "node_chrf", "log": str(log)}, "length": {"type": "verbosity", "unit": "chars"}}
    train = tiny_config(model, data, tmp, optim=OptimConfig(steps=2, lr=2e-2), reward=RewardConfig(objectives=objectives),
                        tracking=TrackingConfig(enabled=True, experiment=experiment, tracking_uri=tracking_uri,
                                                samples_every=0))
    train.output_dir = output_dir or str(tmp / "shared_runs")
    train.data.max_eval_prompts = 4
    return SearchConfig(train=train, name=experiment, strategy="grid", weights=[[1, 0], [0, 1]], evaluate_base=False,
                        **search)


@pytest.mark.parametrize("uri, output_dir, message", [
    ("sqlite:///{tmp}/mlflow.db", None, "train.tracking.tracking_uri: sqlite:///{tmp}/mlflow.db is a store on this machine"),
    ("file://{tmp}/mlruns", None, "train.tracking.tracking_uri: file://{tmp}/mlruns is a store on this machine"),
    ("{tmp}/mlruns", None, "train.tracking.tracking_uri: {tmp}/mlruns is a store on this machine"),
    ("{server}", "runs", "train.output_dir: 'runs' is relative; with ray.address every node"),
], ids=["sqlite", "file-uri", "path", "relative-output-dir"])
def test_what_other_nodes_cannot_reach_is_refused_before_anything_runs(uri, output_dir, message, deployment,
                                                                       tiny_llama, in_tmp):
    cluster, server = deployment
    uri, message = (s.format(tmp=in_tmp, server=server) for s in (uri, message))
    config = search_config(tiny_llama, in_tmp, "refused", uri, in_tmp / "nodes.log", output_dir, executor="ray",
                           ray=RayConfig(address=cluster))
    with pytest.raises(ConfigError) as info:
        moalign.search(config)
    assert len(str(info.value).splitlines()) == 1 and str(info.value).startswith(message), str(info.value)
    if output_dir is None:  # names the cluster and says what to use instead
        assert str(info.value).endswith(f"the Ray cluster at {cluster} cannot reach: use an MLflow server (http://host:port)")
    # nothing ran: no store, no run, no checkpoint folder
    assert not any((in_tmp / name).exists() for name in ("mlflow.db", "mlruns", "runs", "shared_runs", "nodes.log"))
    assert MlflowClient(server).get_experiment_by_name("refused") is None


def test_children_run_on_both_nodes_and_give_the_local_front(deployment, tiny_llama, in_tmp):
    cluster, server = deployment
    log = in_tmp / "nodes.log"
    output_dir = in_tmp / "shared_runs"
    try:
        on_ray = moalign.search(search_config(tiny_llama, in_tmp, "multinode", server, log, str(output_dir),
                                              executor="ray", ray=RayConfig(address=cluster, max_retries=0)))
        node_resource = {n["NodeID"]: [r for r in NODES if r in n["Resources"]] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()  # the local search below must not score inside the cluster's driver
    assert sorted(node_resource.values()) == [[NODES[0]], [NODES[1]]]
    scored_on = log.read_text().split()
    # two trainings, one task each (max_retries=0), scored on both nodes: one on each
    assert {node_resource[n][0] for n in scored_on} == set(NODES), scored_on

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each Ray task (OMP_NUM_THREADS = its num_cpus)
    try:
        local = moalign.search(search_config(tiny_llama, in_tmp, "multinode-local", server, log, str(output_dir)))
    finally:
        torch.set_num_threads(threads)

    client = MlflowClient(server)
    exp = client.get_experiment_by_name("multinode").experiment_id
    runs = client.search_runs([exp])
    children = {r.data.tags.get("moalign.key"): r for r in runs if r.info.run_id != on_ray.parent_run_id}
    assert sorted(children) == ["train:0.0000,1.0000:s0", "train:1.0000,0.0000:s0"]
    assert {r.data.tags.get("mlflow.parentRunId") for r in children.values()} == {on_ray.parent_run_id}
    assert {r.info.status for r in children.values()} == {"FINISHED"}
    # each child run names the node that ran it, the one its objective scored on
    assert {node_resource[r.data.tags["moalign.ray_node"]][0] for r in children.values()} == set(NODES)
    assert {r.data.tags["moalign.ray_node"] for r in children.values()} == set(scored_on)
    for run in children.values():  # every step logged once, from whichever node trained it
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == [1, 2]
        assert Path(run.data.tags["moalign.checkpoint_dir"]).is_relative_to(output_dir)
    local_exp = client.get_experiment_by_name("multinode-local").experiment_id
    assert not any("moalign.ray_node" in r.data.tags for r in client.search_runs([local_exp]))  # no Ray, no tag
    statuses = [r.info.status for r in client.search_runs([exp, local_exp])]
    assert len(statuses) == 6 and set(statuses) == {"FINISHED"}, statuses  # 2 parents + 4 children, none RUNNING

    # the same seeds give the same policies, whichever node trained them
    cols = ["role", "weights", "chrf", "length"]
    assert on_ray.policies[cols].sort_values("weights").values.tolist() == \
        local.policies[cols].sort_values("weights").values.tolist()
    assert on_ray.hypervolume == pytest.approx(local.hypervolume)
