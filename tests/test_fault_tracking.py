"""Tracking faults fail fast and in one line: an unreachable server at start, one that goes away
mid-run, a failed artifact read that is not "no such artifact", two processes opening one store."""
import os
import subprocess
import sys
import textwrap
import time

import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from moalign.cli import main
from moalign.errors import MoalignError
from moalign.tracking import MlflowTracker, NullTracker, read_artifact_text

from conftest import REPO
from mlflow_server import MlflowServer, free_port
from rl_helpers import write_prompts


def train_yaml(folder, model, uri, **changes):
    config = {"model": {"name": model, "lora_r": 2}, "data": {"train": write_prompts(folder / "prompts.jsonl")},
              "sampling": {"num_generations": 2, "prompts_per_step": 2, "max_new_tokens": 4},
              "reward": {"objectives": {"verbosity": {}}},
              "optim": {"steps": 4}, "tracking": {"experiment": "faults", "tracking_uri": uri},
              "output_dir": str(folder / "runs"), "checkpoint_every": 2, "progress": False}
    config.update(changes)
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_an_unreachable_server_fails_in_seconds_with_one_line(tiny_llama, tmp_path):
    """The real command line, so that stderr holds exactly what a user sees."""
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = train_yaml(tmp_path, tiny_llama, uri)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "moalign", "train", "--config", str(config)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"moalign: error: MLflow tracking server {uri} is not answering"), lines
    assert "3 tries with a 10 s timeout" in lines[0]
    assert elapsed < 60  # imports included; MLflow's own defaults would retry for minutes
    assert not (tmp_path / "runs").exists()


def test_the_retry_bounds_are_defaults_the_user_can_override(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    started = time.monotonic()
    with pytest.raises(MoalignError, match="gave up after 1 tries") as exc:
        MlflowTracker("x", f"http://127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 10
    assert "Connection refused" in str(exc.value) and len(str(exc.value).splitlines()) == 1


def test_a_server_that_accepts_but_never_answers_fails_within_the_stated_bound(monkeypatch):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel accepts connections; nobody ever answers them
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    started = time.monotonic()
    with pytest.raises(MoalignError, match="is not answering .*timed out.*3 tries with a 1 s timeout"):
        MlflowTracker("x", f"http://127.0.0.1:{silent.getsockname()[1]}")
    silent.close()
    # 3 tries x 1 s + backoff (0 s, then 2 s + up to 1 s jitter), with slack for a busy machine
    assert time.monotonic() - started < 3 * 1 + 3 + 5


def test_a_failed_artifact_read_is_not_a_missing_artifact(tmp_path):
    dead = MlflowClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MoalignError, match="is not answering"):
        read_artifact_text(dead, "0123456789abcdef", "config.yaml")
    local = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    run = local.create_run(local.create_experiment("e"))
    assert read_artifact_text(local, run.info.run_id, "config.yaml") is None


@pytest.fixture
def no_progress_bars():
    """`moalign` turns transformers' progress bars off before importing it; in-process it already is."""
    from transformers.utils import logging

    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    yield
    if bars:
        logging.enable_progress_bar()


def test_a_server_that_goes_away_mid_run_fails_within_the_bound(tiny_llama, tmp_path, monkeypatch, capsys, no_progress_bars):
    from moalign.rl import trainer

    server = MlflowServer(tmp_path)
    try:
        tracker = MlflowTracker("artifacts", server.url)  # artifacts over HTTP: missing is None, present is text
        run_id = tracker.start_run()
        tracker.log_dict(run_id, {"a": 1}, "config.yaml")
        assert yaml.safe_load(tracker.read_text(run_id, "config.yaml")) == {"a": 1}
        assert tracker.read_text(run_id, "nosuch.yaml") is None
        tracker.end_run(run_id)

        real_update, calls = trainer.policy_update, {"n": 0}

        def server_dies_during_step_two(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                server.stop()
                times["stopped"] = time.monotonic()
            return real_update(*args, **kwargs)

        times = {}
        monkeypatch.setattr(trainer, "policy_update", server_dies_during_step_two)
        capsys.readouterr()
        assert main(["train", "--config", str(train_yaml(tmp_path, tiny_llama, server.url))]) == 2
        failed_after = time.monotonic() - times["stopped"]
    finally:
        server.stop()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"moalign: error: MLflow tracking server {server.url} is not answering"), lines
    assert failed_after < 3 * 10 + 3 + 10  # the stated bound (tries x timeout + backoff), plus step two itself
    with pytest.raises(MoalignError, match="is not answering"):
        tracker.log_metrics(run_id, [(1, {"x": 1.0})])
    started = time.monotonic()
    with pytest.raises(MoalignError, match="is not answering"):  # once lost, every call fails at once
        tracker.set_tags(run_id, {"x": "y"})
    assert time.monotonic() - started < 1
    tracker.end_run(run_id, "FAILED")  # a no-op: the error worth reading was raised already


CREATE = textwrap.dedent("""
    import sys
    from moalign.tracking import MlflowTracker
    tracker = MlflowTracker("shared", sys.argv[1])
    tracker.end_run(tracker.start_run())
    print(tracker.experiment_id)
""")


def test_processes_creating_one_store_and_experiment_at_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", CREATE, uri], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(p.wait(180), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [0, 0, 0], [r[2][-1500:] for r in results]
    assert len({r[1].strip() for r in results}) == 1  # one experiment for all three
    client = MlflowClient(uri)
    experiments = [e.name for e in client.search_experiments(view_type=ViewType.ALL)]
    assert sorted(experiments) == ["Default", "shared"]
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"] * 3


def test_an_experiment_created_between_lookup_and_creation_is_found(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    existing = MlflowTracker("raced", uri).create_experiment()
    real = MlflowClient.get_experiment_by_name
    lookups = []

    def not_there_yet(self, name):  # opening and creating both look it up: another process creates it in between
        lookups.append(name)
        return None if len(lookups) <= 2 else real(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", not_there_yet)
    assert MlflowTracker("raced", uri).create_experiment() == existing and len(lookups) == 3  # refused as existing, found


def test_last_step(tmp_path):
    assert NullTracker().last_step(None, "loss") is None
    tracker = MlflowTracker("steps", f"sqlite:///{tmp_path / 'm.db'}")
    run_id = tracker.start_run()
    assert tracker.last_step(run_id, "loss") is None
    tracker.log_metrics(run_id, [(1, {"loss": 1.0}), (3, {"loss": 0.5}), (2, {"loss": 0.7, "kl": 0.1})])
    assert tracker.last_step(run_id, "loss") == 3 and tracker.last_step(run_id, "kl") == 2
