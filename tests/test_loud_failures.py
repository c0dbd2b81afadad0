"""The last loud failures, each now one line (exit 2) with nothing lost: an objective that raises
mid-training, a checkpoint that cannot be written, a refused LoRA target, a tracking server that is
down, a run resumed after failing before its first checkpoint; and held-out prompts that are
held out."""
import os
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from moalign import Objective, register_objective
from moalign.cli import main
from moalign.data import train_eval_split

from mlflow_server import free_port
from rl_helpers import PROMPTS, write_prompts


class Fragile(Objective):
    """Scores like word_share; raises at its `fail_at`-th call while the flag file exists."""

    name = "fragile"
    calls = 0

    def __init__(self, flag: str = "", fail_at: int = 2):
        self.flag, self.fail_at = flag, fail_at

    def _score(self, batch):
        Fragile.calls += 1
        if self.flag and os.path.exists(self.flag) and Fragile.calls >= self.fail_at:
            raise RuntimeError("the scoring service is gone")
        return [c.split().count("good") / max(len(c.split()), 1) for c in batch.completions]


register_objective("fragile", Fragile)


def train_yaml(tmp_path, tiny_llama, **extra) -> str:
    config = {"model": {"name": tiny_llama, "lora_r": 2}, "data": {"train": write_prompts(tmp_path / "p.jsonl")},
              "sampling": {"num_generations": 2, "prompts_per_step": 2, "max_new_tokens": 4},
              "optim": {"steps": 4}, "tracking": {"experiment": "loud"}, "output_dir": str(tmp_path / "runs"),
              "checkpoint_every": 10, "progress": False, **extra}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture
def store(tmp_path, monkeypatch):
    from transformers.utils import logging

    # `moalign` turns transformers' progress bars off before transformers is imported; here it already is
    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield MlflowClient(uri)
    if bars:
        logging.enable_progress_bar()


def one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("moalign: error: "), err
    return err[0]


def test_an_objective_that_raises_mid_training_is_one_line_and_the_run_resumes(tiny_llama, tmp_path, store, capsys,
                                                                              one_torch_thread):
    """It fails at step 2, before the first checkpoint: the run is FAILED, and --resume restarts it
    from step 0 in the same run (it used to fail on re-logging the resolved tracking URI as a param)."""
    flag = tmp_path / "fail"
    flag.write_text("")
    Fragile.calls = 0
    config = train_yaml(tmp_path, tiny_llama, reward={"objectives": {"g": {"type": "fragile", "flag": str(flag)}}})
    capsys.readouterr()
    assert main(["train", "--config", config]) == 2
    line = one_line(capsys)
    (run,) = store.search_runs([store.get_experiment_by_name("loud").experiment_id])
    assert "step 2: objective 'fragile' failed: RuntimeError: the scoring service is gone" in line
    assert f"moalign train --resume {run.info.run_id}" in line and run.info.status == "FAILED"
    flag.unlink()  # the service is back
    assert main(["train", "--resume", run.info.run_id]) == 0
    resumed = store.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED"
    steps = [m.step for m in store.get_metric_history(run.info.run_id, "loss")]
    assert sorted(steps) == [1, 2, 3, 4] and len(steps) == len(set(steps))  # step 1 was logged once, not twice


def test_a_checkpoint_that_cannot_be_written_says_which_one_is_intact(tiny_llama, tmp_path, store, capsys,
                                                                     monkeypatch, one_torch_thread):
    import torch

    from moalign.rl import checkpoint

    save = torch.save

    def full_disk(obj, path, *args, **kwargs):
        if "step-0000004" in str(path):  # the disk fills up between the checkpoints of steps 2 and 4
            raise OSError(28, "No space left on device")
        return save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    config = train_yaml(tmp_path, tiny_llama, checkpoint_every=2)
    capsys.readouterr()
    assert main(["train", "--config", config]) == 2
    line = one_line(capsys)
    assert "could not write the checkpoint of step 4" in line and "No space left on device" in line
    assert "the checkpoint at step 2" in line and "is intact" in line
    (run,) = store.search_runs([store.get_experiment_by_name("loud").experiment_id])
    assert run.info.status == "FAILED"
    folder = tmp_path / "runs" / run.info.run_id / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["step-0000002"]  # no half-written step left


def test_a_refused_lora_target_leaves_no_empty_experiment(tiny_llama, tmp_path, store, capsys):
    config = train_yaml(tmp_path, tiny_llama, model={"name": tiny_llama, "lora_target_modules": ["no_such_layer"]})
    capsys.readouterr()
    assert main(["train", "--config", config]) == 2
    assert "model.lora_target_modules" in one_line(capsys)
    assert store.get_experiment_by_name("loud") is None


def test_a_tracking_server_that_is_down_is_one_line_without_retry_warnings(tiny_llama, tmp_path):
    """urllib3 logs a warning at each retry; with logging configured (Ray's driver, a notebook,
    an application that calls basicConfig) they reached stderr before moalign's one line."""
    config = train_yaml(tmp_path, tiny_llama)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "OMP_NUM_THREADS": "1"}
    script = ("import logging, sys; logging.basicConfig(); from moalign.cli import main; "
              f"sys.exit(main(['train', '--config', {config!r}]))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "is not answering" in lines[0] and "Retrying" not in proc.stderr


def test_a_prompt_that_appears_twice_is_held_out_whole():
    records = [{"prompt": p, "references": [f"ref {i}"]} for i, p in enumerate(PROMPTS * 3)]  # each prompt 3 times
    train, held = train_eval_split(records, 0.2, seed=0)
    assert {r["prompt"] for r in train}.isdisjoint({r["prompt"] for r in held})
    assert len({r["prompt"] for r in held}) == 2 and len(held) == 6  # 2 of 10 distinct prompts, all their copies
    unique = [{"prompt": p} for p in PROMPTS]  # each prompt once: the split every earlier run had
    import numpy as np

    order = np.random.default_rng(0).permutation(len(unique))
    assert train_eval_split(unique, 0.2, 0)[1] == [unique[i] for i in order[:2]]
