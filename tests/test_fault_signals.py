"""SIGTERM is handled like Ctrl-C: the run checkpoints, is marked KILLED, the process exits 143
(128 + SIGTERM, what schedulers read as "terminated") and `--resume` finishes the run."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import yaml
from mlflow.tracking import MlflowClient

from moalign import cli
from moalign.tracking import MlflowTracker

from conftest import REPO
from rl_helpers import write_prompts

STEPS = 12

# The real `moalign` entry point, with steps slowed down so that the signal lands mid-run.
SLOW_TRAIN = textwrap.dedent("""
    import sys, time
    from moalign.rl import trainer
    real = trainer.policy_update
    def slow(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)
    trainer.policy_update = slow
    from moalign.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigterm_checkpoints_marks_the_run_killed_and_it_resumes(tiny_llama, tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {"model": {"name": tiny_llama, "lora_r": 2}, "data": {"train": write_prompts(tmp_path / "prompts.jsonl")},
              "sampling": {"num_generations": 2, "prompts_per_step": 2, "max_new_tokens": 4},
              "reward": {"objectives": {"verbosity": {}}}, "optim": {"steps": STEPS},
              "tracking": {"experiment": "sigterm", "tracking_uri": uri}, "output_dir": str(tmp_path / "runs"),
              "checkpoint_every": 1, "progress": False}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_TRAIN, "train", "--config", str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tracker = MlflowTracker("sigterm", uri)
    deadline, run_id = time.monotonic() + 180, None
    while time.monotonic() < deadline and proc.poll() is None:  # until a step is logged and checkpointed
        runs = tracker.find_runs("")
        if runs and (tracker.last_step(runs[0].info.run_id, "reward/total") or 0) >= 1:
            run_id = runs[0].info.run_id
            break
        time.sleep(0.2)
    assert run_id is not None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "moalign: stopped by SIGTERM", err
    assert f"--resume {run_id}" in err
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "KILLED"
    stopped_at = tracker.last_step(run_id, "reward/total")
    assert 1 <= stopped_at < STEPS

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert cli.main(["train", "--resume", run_id]) == 0, capsys.readouterr().err
    assert client.get_run(run_id).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "reward/total")]
    assert sorted(steps) == list(range(1, STEPS + 1))  # each step once: none lost, none logged twice


def test_a_second_sigterm_does_not_cut_the_clean_up_short(monkeypatch, capsys):
    before = signal.getsignal(signal.SIGTERM)
    done = []

    def command(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted at once
        except KeyboardInterrupt:
            os.kill(os.getpid(), signal.SIGTERM)  # e.g. a scheduler repeating itself during the checkpoint
            time.sleep(0.1)
            done.append("clean-up finished")
            raise
        return 0

    monkeypatch.setattr(cli, "_cmd_objectives", command)
    assert cli.main(["objectives"]) == 143
    assert done == ["clean-up finished"]
    assert capsys.readouterr().err.strip() == "moalign: stopped by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before  # main() leaves the process as it found it


def test_ctrl_c_outside_training_is_one_line_and_130(monkeypatch, capsys):
    def command(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_objectives", command)
    assert cli.main(["objectives"]) == 130
    assert capsys.readouterr().err.strip() == "moalign: interrupted"
