"""`moalign train` from YAML: end to end on the tiny model, and one-line errors for bad configs."""
import pytest
import yaml
from mlflow.tracking import MlflowClient

from moalign.cli import main
from moalign.tracking import resolve_tracking_uri

from rl_helpers import write_prompts


@pytest.fixture
def config_file(tiny_llama, in_tmp):
    data = write_prompts(in_tmp / "prompts.jsonl")
    config = {
        "model": {"name": tiny_llama, "lora_r": 4},
        "data": {"train": data},
        "sampling": {"num_generations": 2, "prompts_per_step": 2, "max_new_tokens": 6},
        "reward": {"objectives": {"verbosity": {}, "good": {"type": "word_share"}}, "weights": [0.5, 0.5],
                   "constraints": ["toxicity <= 0.5"]},
        "optim": {"steps": 3},
        "tracking": {"experiment": "cli"},
        "checkpoint_every": 2,
        "progress": False,
    }
    path = in_tmp / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_from_yaml_with_weights_and_set(config_file, capsys):
    assert main(["train", "--config", str(config_file), "--weights", "0.2,0.8", "--set", "optim.steps=2"]) == 0
    out = capsys.readouterr().out
    assert "2 steps" in out and "verbosity=" in out
    client = MlflowClient(resolve_tracking_uri())
    run = client.search_runs([client.get_experiment_by_name("cli").experiment_id])[0]
    assert run.data.params["reward.weights"] == "[0.2, 0.8]"
    assert "eval/toxicity" in run.data.metrics and "constraints/toxicity/violation" in run.data.metrics


def test_resume_from_the_cli_after_ctrl_c(config_file, monkeypatch, capsys):
    from moalign.rl import trainer

    real_update = trainer.policy_update
    calls = {"n": 0}

    def interrupt_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_update(*args, **kwargs)

    monkeypatch.setattr(trainer, "policy_update", interrupt_on_third)
    assert main(["train", "--config", str(config_file)]) == 130
    client = MlflowClient(resolve_tracking_uri())
    run_id = client.search_runs([client.get_experiment_by_name("cli").experiment_id])[0].info.run_id
    assert f"--resume {run_id}" in capsys.readouterr().err
    monkeypatch.setattr(trainer, "policy_update", real_update)
    assert main(["train", "--resume", run_id]) == 0
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == [1, 2, 3]


@pytest.mark.parametrize("change,message", [
    ({"reward": {"objectives": {"fluency": {}}}}, "unknown objective 'fluency'"),
    ({"reward": {"objectives": {"verbosity": {}}, "weights": [0.5, 0.5]}}, "got 2 weights for 1 objectives"),
    ({"reward": {"objectives": {"verbosity": {}, "toxicity": {}}, "weights": [1, -1]}}, "non-negative"),
    ({"algorithm": {"name": "ppo2"}}, "algorithm.name must be one of"),
    ({"data": {"train": "missing.jsonl"}}, "missing.jsonl: no such data file"),
    ({"optim": {"lerning_rate": 0.1}}, "unknown key 'optim.lerning_rate'"),
    ({"reward": {"objectives": {"bleu": {}}}}, "objective 'bleu' needs the field 'references'"),
])
def test_bad_configs_fail_with_one_line_and_exit_2(change, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n{"prompt": "ho"}\n{"prompt": "ha"}\n')
    config = {"model": {"name": "does-not-matter"}, "data": {"train": "p.jsonl"}, "tracking": {"enabled": False}}
    for section, values in change.items():
        config.setdefault(section, {}).update(values)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_bad_weights_flag_and_yaml_syntax(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  name: [unclosed\n")
    assert main(["train", "--config", str(path)]) == 2
    assert f"{path}:" in capsys.readouterr().err
    assert main(["train", "--weights", "a,b"]) == 2
    assert "--weights" in capsys.readouterr().err


def test_yaml_and_set_read_exponent_floats_and_check_types(tmp_path):
    from moalign.config import apply_overrides, from_dict
    from moalign.errors import ConfigError
    from moalign.rl.cli import build_config
    from moalign.rl.config import TrainConfig

    path = tmp_path / "c.yaml"
    path.write_text("data: {train: x.jsonl}\noptim: {lr: 2e-4, steps: 3}\n")
    config = build_config(str(path), overrides=["algorithm.kl_coef=1e-3"])
    assert config.optim.lr == 2e-4 and config.algorithm.kl_coef == 1e-3
    with pytest.raises(ConfigError, match="optim.lr: expected a number, got 'fast'"):
        from_dict(TrainConfig, apply_overrides({"data": {"train": "x"}}, ["optim.lr=fast"]))
    with pytest.raises(ConfigError, match="optim.steps: expected an integer, got 2.5"):
        from_dict(TrainConfig, {"data": {"train": "x"}, "optim": {"steps": 2.5}})
