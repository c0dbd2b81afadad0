"""Interrupts and faults lose nothing: a resumed run equals the uninterrupted one, whatever broke.

Each test stops a run at a bad moment (inside an update, before the first checkpoint, while the
tracking server is down, during a checkpoint save), resumes it, and compares the adapter weights
and MLflow history with a run that was never interrupted.
"""
import os
import pickle

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

import moalign
from moalign import MoalignError
from moalign.rl import checkpoint as ckpt
from moalign.rl import trainer
from moalign.rl.config import AlgorithmConfig, OptimConfig, RewardConfig, TrackingConfig
from moalign.tracking import MlflowTracker, resolve_tracking_uri

from rl_helpers import tiny_config, write_prompts


def config_for(tiny_llama, tmp_path, steps=6, **algorithm):
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_prompts(tmp_path / "prompts.jsonl")
    algo = AlgorithmConfig(name="grpo", kl_coef=0.1, **algorithm)
    return tiny_config(tiny_llama, data, tmp_path, optim=OptimConfig(steps=steps, lr=1e-2), checkpoint_every=2,
                       algorithm=algo, reward=RewardConfig(objectives={"good": {"type": "word_share"}, "verbosity": {}}),
                       tracking=TrackingConfig(enabled=True, experiment="resume"))


def adapter(result) -> dict:
    return load_file(str(result.adapter_dir / "adapter_model.safetensors"))


def steps_logged(run_id, key="reward/total") -> list[int]:
    return sorted(m.step for m in MlflowClient(resolve_tracking_uri()).get_metric_history(run_id, key))


def only_run_id() -> str:
    client = MlflowClient(resolve_tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id], order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id


def assert_same_run(resumed, reference):
    for name, tensor in adapter(reference).items():
        torch.testing.assert_close(adapter(resumed)[name], tensor, rtol=0, atol=1e-6)
    cols = ["reward/total", "loss", "kl", "grad_norm"]
    torch.testing.assert_close(torch.tensor(resumed.history[cols].to_numpy()), torch.tensor(reference.history[cols].to_numpy()),
                               rtol=1e-5, atol=1e-6)


@pytest.fixture
def reference(tiny_llama, in_tmp):
    """The uninterrupted run every test compares with (inner_epochs 2, as in pipelines/gpu.yaml)."""
    return moalign.train(config_for(tiny_llama, in_tmp / "reference", inner_epochs=2))


def test_interrupt_inside_the_update_does_not_checkpoint_half_a_step(tiny_llama, in_tmp, reference, monkeypatch, capsys):
    real, calls = trainer.policy_loss, {"n": 0}

    def interrupt_in_second_epoch_of_step_3(*args, **kwargs):
        calls["n"] += 1  # one call per epoch and micro-batch: 2 per step here
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "policy_loss", interrupt_in_second_epoch_of_step_3)
    config = config_for(tiny_llama, in_tmp, inner_epochs=2)
    with pytest.raises(KeyboardInterrupt):
        moalign.train(config)
    assert "inside step 3's update" in capsys.readouterr().err
    run_id = only_run_id()
    # Step 3's first epoch had already moved the weights: no checkpoint may call them step 2 (or 3).
    assert ckpt.latest_checkpoint(in_tmp / "runs" / run_id / "checkpoint").name == "step-0000002"
    assert steps_logged(run_id) == [1, 2]
    monkeypatch.setattr(trainer, "policy_loss", real)
    resumed = moalign.train(config, resume_run_id=run_id)
    assert steps_logged(run_id) == [1, 2, 3, 4, 5, 6]
    assert_same_run(resumed, reference)


def test_a_run_stopped_before_its_first_checkpoint_starts_afresh_in_the_same_run(tiny_llama, in_tmp, reference):
    config = config_for(tiny_llama, in_tmp, inner_epochs=2)
    tracker = MlflowTracker("resume")
    run_id = tracker.start_run("killed-early")  # as if killed right after the run was created
    resumed = trainer.train(config, resume_run_id=run_id, tracker=tracker)
    assert resumed.run_id == run_id and steps_logged(run_id) == [1, 2, 3, 4, 5, 6]
    assert MlflowClient(resolve_tracking_uri()).get_run(run_id).info.status == "FINISHED"
    assert_same_run(resumed, reference)


class ServerGoesAway(MlflowTracker):
    """Metrics cannot be logged at the `fail_at`-th flush (the server went away)."""

    def __init__(self, *args, fail_at: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        self.flushes, self.fail_at = 0, fail_at

    def log_metrics(self, run_id, rows):
        rows = list(rows)
        if rows and "reward/total" in rows[0][1]:
            self.flushes += 1
            if self.flushes == self.fail_at:
                raise MoalignError("tracking server unreachable")
        return super().log_metrics(run_id, rows)


def test_tracking_failure_never_leaves_a_checkpoint_ahead_of_the_logged_steps(tiny_llama, in_tmp, reference):
    config = config_for(tiny_llama, in_tmp, inner_epochs=2)
    with pytest.raises(MoalignError, match="unreachable"):
        trainer.train(config, tracker=ServerGoesAway("resume", fail_at=2))
    run_id = only_run_id()
    assert steps_logged(run_id) == [1, 2]
    # Logging comes first: steps 3-4 were not logged, so no checkpoint may claim them.
    assert ckpt.latest_checkpoint(in_tmp / "runs" / run_id / "checkpoint").name == "step-0000002"
    resumed = moalign.train(config, resume_run_id=run_id)
    assert steps_logged(run_id) == [1, 2, 3, 4, 5, 6]
    assert_same_run(resumed, reference)


def test_steps_logged_before_a_failed_save_are_not_logged_twice(tiny_llama, in_tmp, reference, monkeypatch):
    real, saves = ckpt.save_checkpoint, {"n": 0}

    def disk_full_on_second_save(*args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "save_checkpoint", disk_full_on_second_save)
    config = config_for(tiny_llama, in_tmp, inner_epochs=2)
    with pytest.raises(OSError):
        moalign.train(config)
    run_id = only_run_id()
    assert steps_logged(run_id) == [1, 2, 3, 4]  # logged, then the save failed
    assert MlflowClient(resolve_tracking_uri()).get_run(run_id).info.status == "FAILED"
    monkeypatch.setattr(trainer, "save_checkpoint", real)
    resumed = moalign.train(config, resume_run_id=run_id)
    assert steps_logged(run_id) == [1, 2, 3, 4, 5, 6]  # steps 3-4 recomputed, not logged again
    assert_same_run(resumed, reference)


class _Policy:
    """Enough of a Policy for save_checkpoint: writes a small adapter file."""

    def save(self, directory, state_dict=None):
        os.makedirs(directory, exist_ok=True)
        torch.save({"w": torch.ones(2)}, os.path.join(directory, "model.pt"))


def _save(directory, step):
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return ckpt.save_checkpoint(directory, _Policy(), optimizer, scheduler, step, {"history": [], "baseline": None})


def test_checkpoint_swap_always_leaves_a_whole_checkpoint_and_cleans_stale_folders(tmp_path, monkeypatch):
    directory = tmp_path / "checkpoint"
    _save(directory, 2)
    (directory / ".step-0000004.tmp12345").mkdir()  # a save killed with kill -9
    assert ckpt.load_checkpoint_state(directory)["step"] == 2

    def crash(*args):  # the process dies at the rename that publishes step 4
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(directory, 4)
    monkeypatch.undo()
    assert ckpt.load_checkpoint_state(directory)["step"] == 2  # the previous checkpoint is intact
    _save(directory, 6)
    assert sorted(p.name for p in directory.iterdir()) == ["step-0000006"]  # stale and older folders gone
    state = ckpt.load_checkpoint_state(directory)
    assert state["step"] == 6 and state["trainer"]["history"] == []
    assert ckpt.load_checkpoint_state(tmp_path / "none") is None


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = "/tmp/moalign-checkpoint-payload-ran"


def test_a_checkpoint_cannot_run_code(tmp_path):
    if os.path.exists(MARKER):
        os.remove(MARKER)
    directory = tmp_path / "checkpoint"
    step = _save(directory, 2)
    with open(step / "state.pt", "wb") as fh:
        pickle.dump({"step": 2, "optimizer": _Payload()}, fh, protocol=2)
    with pytest.raises(MoalignError, match="unreadable"):
        ckpt.load_checkpoint_state(directory)
    assert not os.path.exists(MARKER)


def test_the_config_read_back_for_resume_keeps_objectives_in_their_weights_order(tiny_llama, in_tmp, monkeypatch):
    """MLflow's log_dict sorts YAML keys: read back, the weights would go to other objectives."""
    from moalign.rl.cli import config_of_run

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "policy_update", interrupt)
    config = config_for(tiny_llama, in_tmp, steps=1)
    config.reward.objectives = {"verbosity": {}, "good": {"type": "word_share"}}  # not alphabetical
    config.reward.weights = [0.9, 0.1]
    with pytest.raises(KeyboardInterrupt):
        moalign.train(config)
    back, _ = config_of_run(only_run_id(), None)
    assert list(back.reward.objectives) == ["verbosity", "good"] and back.reward.weights == [0.9, 0.1]
