"""MLflow records (SQLite default and a real server), resume without duplicate steps, Ctrl-C."""
import json

import pytest
from mlflow.tracking import MlflowClient

import moalign
from moalign.rl.config import OptimConfig, RewardConfig, TrackingConfig
from moalign.tracking import resolve_tracking_uri

from mlflow_server import mlflow_server
from rl_helpers import WordShare, tiny_config, write_prompts
from moalign import register_objective


def check_complete_run(client: MlflowClient, run_id: str, steps: int):
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["algorithm.name"] == "rloo"
    assert json.loads(run.data.params["reward.weights"]) == [0.7, 0.3]
    for key in ("reward/total", "rewards/good/mean", "rewards/good/normalized", "kl", "entropy", "loss",
                "grad_norm", "tokens_per_s", "time/step", "eval/good", "eval/verbosity"):
        assert key in run.data.metrics, key
    history = client.get_metric_history(run_id, "reward/total")
    assert sorted(m.step for m in history) == list(range(1, steps + 1))
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"samples.json", "eval_samples.json", "adapter", "config.yaml"} <= artifacts
    adapter = {a.path for a in client.list_artifacts(run_id, "adapter")}
    assert "adapter/adapter_config.json" in adapter


def tracked_config(tiny_llama, tmp_path, uri=None, steps=4):
    data = write_prompts(tmp_path / "prompts.jsonl")
    return tiny_config(
        tiny_llama, data, tmp_path, optim=OptimConfig(steps=steps, lr=1e-2), checkpoint_every=2,
        reward=RewardConfig(objectives={"good": {"type": "word_share"}, "verbosity": {}}, weights=[0.7, 0.3]),
        tracking=TrackingConfig(enabled=True, experiment="test", tracking_uri=uri, samples_every=2))


def test_sqlite_default_store_holds_a_complete_run(tiny_llama, in_tmp):
    result = moalign.train(tracked_config(tiny_llama, in_tmp))
    assert (in_tmp / "mlflow.db").is_file()
    check_complete_run(MlflowClient(resolve_tracking_uri()), result.run_id, 4)


def test_real_mlflow_server(tiny_llama, tmp_path, monkeypatch):
    with mlflow_server(tmp_path) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        result = moalign.train(tracked_config(tiny_llama, tmp_path))
        check_complete_run(MlflowClient(url), result.run_id, 4)


class InterruptAt(WordShare):
    """Raises KeyboardInterrupt (as Ctrl-C would) on its `at`-th call."""

    name = "interrupt_at"
    calls = 0

    def __init__(self, word: str = "good", at: int = 0):
        super().__init__(word)
        self.at = at

    def _score(self, batch):
        InterruptAt.calls += 1
        if InterruptAt.calls == self.at:
            raise KeyboardInterrupt
        return super()._score(batch)


def test_ctrl_c_then_resume_logs_every_step_once(tiny_llama, in_tmp):
    register_objective("interrupt_at", InterruptAt)
    (in_tmp / "reference").mkdir()
    reference = moalign.train(tracked_config(tiny_llama, in_tmp / "reference", steps=6))

    config = tracked_config(tiny_llama, in_tmp, steps=6)
    config.reward.objectives["good"] = {"type": "interrupt_at", "at": 5}  # Ctrl-C while scoring step 5
    InterruptAt.calls = 0
    with pytest.raises(KeyboardInterrupt):
        moalign.train(config)
    client = MlflowClient(resolve_tracking_uri())
    run = client.search_runs([client.get_experiment_by_name("test").experiment_id],
                             order_by=["attributes.start_time DESC"])[0]
    assert run.info.status == "KILLED"
    # Ctrl-C during step 5 saved a checkpoint at step 4 and flushed steps 1-4
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "reward/total")) == [1, 2, 3, 4]

    config.reward.objectives["good"]["at"] = 0
    resumed = moalign.train(config, resume_run_id=run.info.run_id)
    assert resumed.run_id == run.info.run_id
    history = client.get_metric_history(run.info.run_id, "reward/total")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    # seeded per step: the resumed run is the run that was never interrupted
    ref = {m.step: m.value for m in MlflowClient(resolve_tracking_uri()).get_metric_history(reference.run_id, "rewards/good/mean")}
    got = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "rewards/good/mean")}
    assert got == pytest.approx(ref, abs=1e-6)


def test_finished_run_keeps_its_adapter_and_drops_its_checkpoint(tiny_llama, in_tmp):
    result = moalign.train(tracked_config(tiny_llama, in_tmp, steps=2))
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert not (result.run_dir / "checkpoint").exists()
