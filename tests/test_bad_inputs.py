"""Every bad input ends the same way: exit code 2, one stderr line `moalign: error: ...` naming what
is wrong, no traceback, no file written (beside the MLflow store) and no MLflow run left RUNNING.

Each case builds its inputs in a fresh folder and runs `moalign.cli.main` in-process. Almost all
of them must fail before any model loads, which keeps the whole battery to seconds.
"""
import codecs
import json
import os
from pathlib import Path

import pytest
import yaml

from moalign.cli import main

from mlflow_server import free_port
from rl_helpers import PROMPTS

NOBODY = f"http://127.0.0.1:{free_port()}"  # a port nothing listens on


def read_only_dir(tmp: Path) -> Path:
    """A folder nothing can be created in. root ignores permission bits, but not sysfs."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


class Workspace:
    """Inputs for one case, all inside `root` (the working directory)."""

    def __init__(self, root: Path, model: str):
        self.root, self.model = root, model
        self.prompts = self.write("prompts.jsonl", "\n".join(
            json.dumps({"prompt": p, "completion": "the cat", "references": ["the cat sat"]}) for p in PROMPTS))

    def write(self, name: str, content: str | bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def folder(self, name: str) -> str:
        (self.root / name).mkdir(parents=True)
        return str(self.root / name)

    def train_config(self, **sections) -> dict:
        config = {"model": {"name": self.model, "lora_r": 2}, "data": {"train": self.prompts},
                  "sampling": {"num_generations": 2, "prompts_per_step": 2, "max_new_tokens": 4},
                  "optim": {"steps": 2}, "tracking": {"experiment": "battery"},
                  "output_dir": str(self.root / "runs"), "progress": False}
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        return config

    def train(self, *flags, **sections) -> list[str]:
        return ["train", "--config", self.write("train.yaml", yaml.safe_dump(self.train_config(**sections))), *flags]

    def pipeline(self, *flags, train: dict | None = None, **top) -> list[str]:
        config = {"experiment": "battery", "train": self.train_config(**(train or {})),
                  "searches": [{"strategy": "grid", "weights": [[1.0]]}], "report": {"out": str(self.root / "report")}}
        config.update(top)
        return ["run", self.write("pipeline.yaml", yaml.safe_dump(config)), *flags]

    def evaluate(self, data: str, *flags, objectives: str = "verbosity") -> list[str]:
        return ["evaluate", "--data", data, "--objectives", objectives, "--quiet", *flags]


def _deleted_experiment(ws: Workspace) -> list[str]:
    from moalign.tracking import MlflowTracker

    tracker = MlflowTracker("battery")
    tracker.client.delete_experiment(tracker.create_experiment())
    return ws.train()


def _existing_experiment(ws: Workspace, name: str = "battery") -> None:
    from moalign.tracking import MlflowTracker

    MlflowTracker(name).create_experiment()


def _finished_run(ws: Workspace) -> list[str]:
    from moalign.tracking import MlflowTracker

    tracker = MlflowTracker("battery")
    run_id = tracker.start_run()
    tracker.log_dict(run_id, ws.train_config(), "config.yaml")
    tracker.end_run(run_id, "FINISHED")
    return ["train", "--resume", run_id]


def _report_unknown_run(ws: Workspace) -> list[str]:
    _existing_experiment(ws)
    return ["report", "--experiment", "battery", "--runs", "nosuch", "--out", str(ws.root / "report")]


LATIN1 = '{"prompt": "caf\xe9", "completion": "x"}\n'.encode("latin-1")
UTF16 = codecs.BOM_UTF16_LE + '{"prompt": "p", "completion": "x"}\n'.encode("utf-16-le")
DEEP = ("[" * 100_000 + "]" * 100_000 + "\n").encode()

def _pool_without_scores(ws) -> str:
    import pandas as pd

    path = ws.root / "pool.parquet"
    pd.DataFrame({"prompt_index": [0], "prompt": ["the cat"], "completion": ["a cat"]}).to_parquet(path)
    return str(path)


def _search(spec: str):
    """The pipeline run with its searches replaced by one: `spec`, a YAML flow mapping."""
    return lambda ws: ws.pipeline("--set", f"searches=[{spec}]")


CASES = {
    # sample-score-select strategies and supervised fine-tuning (issue 15)
    "best_of_n n=0": (_search("{strategy: best_of_n, options: {n: 0}}"),
                      "searches[0].options.n must be an integer >= 1"),
    "rejection top_k > n": (_search("{strategy: rejection, options: {n: 2, top_k: 3}}"),
                            "options.top_k (3) must be <= options.n (2)"),
    "rejection iterations=0": (_search("{strategy: rejection, options: {iterations: 0}}"),
                               "options.iterations must be an integer >= 1"),
    "rewards_in_context temperature=0": (_search("{strategy: rewards_in_context, options: {temperature: 0}}"),
                                         "options.temperature must be a number > 0"),
    "rewards_in_context online=-1": (_search("{strategy: rewards_in_context, options: {online: -1}}"),
                                     "options.online must be an integer >= 0"),
    "rewards_in_context online_quantile=1": (_search("{strategy: rewards_in_context, options: {online_quantile: 1}}"),
                                             "options.online_quantile must be a number in [0, 1)"),
    "adaptive validation_fraction=1": (_search("{strategy: adaptive, options: {budget_steps: 1000, validation_fraction: 1}}"),
                                       "options.validation_fraction: the adaptive strategy decides on a validation split"),
    "data.validation_fraction=1": (lambda ws: ws.train("--set", "data.validation_fraction=1"),
                                   "data.validation_fraction must be in [0, 1)"),
    "supervised.online_pools with top_k": (lambda ws: ws.train("--set", "supervised.online_pools=[a.parquet]"),
                                           "supervised.online_pools: only select rewards_in_context"),
    "supervised online pool missing": (lambda ws: ws.train("--set", "supervised.enabled=true", "--set",
                                                           f"supervised.pool={_pool_without_scores(ws)}", "--set",
                                                           "supervised.select=rewards_in_context", "--set",
                                                           f"supervised.online_pools=[{ws.root / 'gone.parquet'}]"),
                                       "supervised.online_pools: "),
    "best_of_n all weights zero": (_search("{strategy: best_of_n, weights: [[0]]}"),
                                   "searches[0].weights: at least one weight must be positive"),
    "RL sampling.top_p=0.9": (lambda ws: ws.train("--set", "sampling.top_p=0.9"),
                              "sampling.top_k and sampling.top_p must stay 0 and 1 for RL training"),
    "max_new_tokens beyond the context": (lambda ws: ws.train("--set", "sampling.max_new_tokens=1000000000"),
                                          "must be below the model's context of 128 tokens"),
    "completion is NaN": (lambda ws: ws.evaluate(ws.write("d.jsonl", '{"prompt": "p", "completion": NaN}\n')),
                          "d.jsonl:1: field 'completion' is NaN, not a string"),
    "supervised without a pool": (lambda ws: ws.train("--set", "supervised.enabled=true"), "supervised.pool is required"),
    "supervised.select=best": (lambda ws: ws.train("--set", "supervised.select=best"), "supervised.select must be one of"),
    "supervised.epochs=0": (lambda ws: ws.train("--set", "supervised.epochs=0"), "supervised.epochs must be an integer >= 1"),
    "supervised.kl_coef=-1": (lambda ws: ws.train("--set", "supervised.kl_coef=-1"), "supervised.kl_coef must be >= 0"),
    "supervised pool missing": (lambda ws: ws.train("--set", "supervised.enabled=true", "--set",
                                                    f"supervised.pool={ws.root / 'none.parquet'}"), "none.parquet is not a file"),
    "supervised pool not parquet": (lambda ws: ws.train("--set", "supervised.enabled=true", "--set",
                                                        f"supervised.pool={ws.prompts}"), "is not a pool table"),
    "supervised pool lacks an objective": (lambda ws: ws.train("--set", "supervised.enabled=true", "--set",
                                                               f"supervised.pool={_pool_without_scores(ws)}"),
                                           "pool.parquet: the pool has no scores for 'verbosity'"),
    # data files (moalign evaluate)
    "jsonl-latin1": (lambda ws: ws.evaluate(ws.write("d.jsonl", LATIN1)), "d.jsonl:1: not UTF-8"),
    "csv-latin1": (lambda ws: ws.evaluate(ws.write("d.csv", b"prompt,completion\ncaf\xe9,x\n")), "d.csv:2: not UTF-8"),
    "jsonl-utf16-bom": (lambda ws: ws.evaluate(ws.write("d.jsonl", UTF16)), "d.jsonl: the file is UTF-16"),
    "csv-utf16-bom": (lambda ws: ws.evaluate(ws.write("d.csv", codecs.BOM_UTF16_LE + "prompt,completion\na,b\n".encode("utf-16-le"))),
                      "d.csv: the file is UTF-16"),
    "json-nested-deep": (lambda ws: ws.evaluate(ws.write("d.jsonl", DEEP)), "d.jsonl:1: JSON nested too deeply"),
    "csv-stray-quote": (lambda ws: ws.evaluate(ws.write("d.csv", 'prompt,completion\n"a,b\nc,d\n')), "d.csv: malformed CSV"),
    "csv-ragged-row": (lambda ws: ws.evaluate(ws.write("d.csv", "prompt,completion\na,b,c,d\n")), "d.csv:2: more fields"),
    "csv-header-only": (lambda ws: ws.evaluate(ws.write("d.csv", "prompt,completion\n")), "d.csv: no samples"),
    "jsonl-empty": (lambda ws: ws.evaluate(ws.write("d.jsonl", "")), "d.jsonl: no samples"),
    "no-completion-column": (lambda ws: ws.evaluate(ws.write("d.csv", "prompt,answer\na,b\n")), "d.csv:2: no 'completion' field"),
    "jsonl-not-an-object": (lambda ws: ws.evaluate(ws.write("d.jsonl", "[1, 2]\n")), "d.jsonl:1: expected a JSON object"),
    "data-is-a-directory": (lambda ws: ws.evaluate(str(ws.root)), "no such data file"),
    "missing-references": (lambda ws: ws.evaluate(ws.write("d.jsonl", '{"prompt": "p", "completion": "c"}\n'), objectives="bleu"),
                           "objective 'bleu' needs the field 'references'"),
    # objective parameters (moalign evaluate --set)
    "verbosity.target=abc": (lambda ws: ws.evaluate(ws.prompts, "--set", "verbosity.target=abc"), "'target'"),
    "verbosity.target=.nan": (lambda ws: ws.evaluate(ws.prompts, "--set", "verbosity.target=.nan"), "'target'"),
    "bleu.tokenize=nosuch": (lambda ws: ws.evaluate(ws.prompts, "--set", "bleu.tokenize=nosuch", objectives="bleu"), "'tokenize'"),
    "chrf.word_order=-3": (lambda ws: ws.evaluate(ws.prompts, "--set", "chrf.word_order=-3", objectives="chrf"), "'word_order'"),
    "rouge_l.use_stemmer=maybe": (lambda ws: ws.evaluate(ws.prompts, "--set", "rouge_l.use_stemmer=maybe", objectives="rouge_l"),
                                  "'use_stemmer'"),
    "unknown-objective": (lambda ws: ws.evaluate(ws.prompts, objectives="blue"), "unknown objective 'blue'"),
    "evaluate --set without a parameter": (lambda ws: ws.evaluate(ws.prompts, "--set", "verbosity=5"),
                                           "expected OBJECTIVE.PARAMETER=VALUE"),
    "likelihood-model-offline": (lambda ws: ws.evaluate(ws.prompts, "--set", "likelihood.model=nosuch-org/lm",
                                                        objectives="likelihood"), "HF_HUB_OFFLINE"),
    # output paths, checked before any work
    "evaluate-out-read-only": (lambda ws: ws.evaluate(ws.prompts, "--out", str(read_only_dir(ws.root) / "sub" / "s.csv")),
                               "not writable"),
    "evaluate-out-is-a-directory": (lambda ws: ws.evaluate(ws.prompts, "--out", ws.folder("dir.csv")), "dir.csv: is a directory"),
    "evaluate-out-under-a-file": (lambda ws: ws.evaluate(ws.prompts, "--out", ws.write("file", "x") + "/s.csv"), "file is a file"),
    "evaluate-out-suffix": (lambda ws: ws.evaluate(ws.prompts, "--out", str(ws.root / "s.txt")), "must end in .csv or .parquet"),
    "train-output-dir-read-only": (lambda ws: ws.train(output_dir=str(read_only_dir(ws.root) / "runs")), "output_dir: "),
    "train-output-dir-is-a-file": (lambda ws: ws.train(output_dir=ws.write("runs", "x")), "output_dir: "),
    "pipeline-report-read-only": (lambda ws: ws.pipeline(report={"out": str(read_only_dir(ws.root) / "r")}), "report.out: "),
    "pipeline-report-is-a-file": (lambda ws: ws.pipeline(report={"out": ws.write("r", "x")}), "report.out: "),
    "report-out-is-a-file": (lambda ws: ["report", "--experiment", "battery", "--out", ws.write("r", "x")],
                             "exists and is not a directory"),
    # a scalar where a section or list belongs
    "--set model=tiny": (lambda ws: ws.train("--set", "model=tiny"), "model: expected a section"),
    "--set reward.constraints=5": (lambda ws: ws.train("--set", "reward.constraints=5"), "reward.constraints: expected a list"),
    "pipeline train=5": (lambda ws: ws.pipeline("--set", "train=5"), "train: expected a section"),
    "pipeline no such search": (lambda ws: ws.pipeline("--set", "searches.nosuch.seeds=[1]"), "no item 'nosuch' in that list"),
    "pipeline a search replaced": (lambda ws: ws.pipeline("--set", "searches.0=[1]"), "searches[0]: expected a mapping"),
    "--set reward.weights=[a]": (lambda ws: ws.train("--set", "reward.weights=[a]"), "reward.weights[0]: expected a number"),
    "lora_target_modules=5": (lambda ws: ws.train("--set", "model.lora_target_modules=5"), "model.lora_target_modules"),
    "--set without =": (lambda ws: ws.train("--set", "optim.lr"), "expected key=value"),
    "--set value nested deep": (lambda ws: ws.train("--set", "optim.lr=" + "[" * 20_000), "not valid YAML"),
    "config-latin1": (lambda ws: ["train", "--config", ws.write("c.yaml", "model: {name: caf\xe9}\n".encode("latin-1"))],
                      "c.yaml:1: not UTF-8"),
    "config-utf16": (lambda ws: ["run", ws.write("c.yaml", "train: {}\n".encode("utf-16"))], "c.yaml: the file is UTF-16"),
    "config-nested-deep": (lambda ws: ["train", "--config", ws.write("c.yaml", "a: " + "[" * 20_000 + "]" * 20_000)],
                           "c.yaml: YAML nested too deeply"),
    # training values (moalign train --set)
    "optim.warmup_steps=-5": (lambda ws: ws.train("--set", "optim.warmup_steps=-5"), "optim.warmup_steps"),
    "optim.max_grad_norm=-1": (lambda ws: ws.train("--set", "optim.max_grad_norm=-1"), "optim.max_grad_norm"),
    "optim.max_grad_norm=.nan": (lambda ws: ws.train("--set", "optim.max_grad_norm=.nan"), "optim.max_grad_norm"),
    "sampling.top_k=-1": (lambda ws: ws.train("--set", "sampling.top_k=-1"), "sampling.top_k"),
    "sampling.eval_num_generations=0": (lambda ws: ws.train("--set", "sampling.eval_num_generations=0"),
                                        "sampling.eval_num_generations"),
    "data.max_eval_prompts=0": (lambda ws: ws.train("--set", "data.max_eval_prompts=0"), "data.max_eval_prompts"),
    "objective-name-a<b>": (lambda ws: ws.train(reward={"objectives": {"a<b>": {"type": "verbosity"}}}), "a<b>"),
    "train-data-latin1": (lambda ws: ws.train(data={"train": ws.write("d.jsonl", LATIN1)}), "d.jsonl:1: not UTF-8"),
    # pipelines
    "pipeline-rloo-one-generation": (lambda ws: ws.pipeline("--set", "train.sampling.num_generations=1"),
                                     "train.sampling.num_generations"),
    "pipeline-reference-point-foo": (lambda ws: ws.pipeline(searches=[{"strategy": "grid", "weights": [[1.0]],
                                                                        "reference_point": "foo"}]),
                                     "searches[0].reference_point"),
    # the second search's typo is found before the first one trains
    "pipeline-second-reference-point": (lambda ws: ws.pipeline(searches=[
        {"strategy": "grid", "weights": [[1.0]]},
        {"strategy": "grid", "weights": [[1.0]], "reference_point": {"nosuch": 1.0}}]), "searches[1].reference_point"),
    "kl-k3-in-reward": (lambda ws: ws.train("--set", "algorithm.kl_in_reward=true"), "does not anchor"),
    # --resume
    "resume-with-set": (lambda ws: ["train", "--resume", "abc", "--set", "optim.steps=5"], "--set is not allowed"),
    "resume-with-weights": (lambda ws: ["train", "--resume", "abc", "--weights", "1"], "--weights is not allowed"),
    "resume-unknown-run": (lambda ws: ["train", "--resume", "nosuch"], "--resume nosuch: "),
    "resume-finished-run": (_finished_run, "the run has already finished"),
    # models: fail before loading, in seconds
    "model-missing-path": (lambda ws: ws.train(model={"name": str(ws.root / "no-model")}), "no such directory"),
    "model-without-weights": (lambda ws: ws.train(model={"name": str(Path(ws.write("m/config.json", "{}")).parent)}),
                              "no weights"),
    "model-unknown-hub-id-offline": (lambda ws: ws.train(model={"name": "nosuch-org/nosuch-model"}), "HF_HUB_OFFLINE"),
    "model-lora-target-modules": (lambda ws: ws.train("--set", "model.lora_target_modules=[nosuch]"),
                                  "model.lora_target_modules"),
    # tracking
    "tracking-unreachable": (lambda ws: ws.train(tracking={"tracking_uri": NOBODY}), "is not answering"),
    "tracking-store-read-only": (lambda ws: ws.train(tracking={"tracking_uri": f"sqlite:///{read_only_dir(ws.root)}/m.db"}),
                                 "not writable"),
    "tracking-deleted-experiment": (_deleted_experiment, "is deleted"),
    "report-unknown-run": (_report_unknown_run, "nosuch"),
    "report-unreachable": (lambda ws: ["report", "--experiment", "battery", "--tracking-uri", NOBODY,
                                       "--out", str(ws.root / "report")], "is not answering"),
}


def files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


def runs_left_running(store: Path) -> list[str]:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    if not store.exists():
        return []
    client = MlflowClient(f"sqlite:///{store}")
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(ids, run_view_type=ViewType.ALL) if ids else []
    return [r.info.run_id for r in runs if r.info.status == "RUNNING"]


@pytest.fixture
def workspace(tmp_path, monkeypatch, tiny_llama):
    from transformers.utils import logging

    # `moalign` turns progress bars off before transformers is imported; here it already is.
    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield Workspace(tmp_path, tiny_llama)
    if bars:
        logging.enable_progress_bar()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_with_one_line(case, workspace, capsys):
    build, message = CASES[case]
    argv = build(workspace)
    before = files_under(workspace.root)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("moalign: error: "), err
    assert "Traceback" not in err and message in lines[0], err
    new = {p for p in files_under(workspace.root) - before if p.parts[0] != "mlflow.db"}
    assert not new, f"left behind: {sorted(map(str, new))}"
    assert runs_left_running(workspace.root / "mlflow.db") == []


@pytest.mark.parametrize("argv,key", [
    (["--set", "optim.lr=-1"], "optim.lr"),
    (["--set", "model.lora_r=0"], "model.lora_r"),
    (["--set", "checkpoint_every=0"], "checkpoint_every"),
    (["--set", "optim.lr=fast"], "optim.lr"),
])
def test_train_errors_name_each_key_once(argv, key, workspace, capsys):
    assert main(workspace.train(*argv)) == 2
    err = capsys.readouterr().err.strip()
    assert f": {key}" in err and f"{key.split('.')[0]}.{key}" not in err, err


@pytest.mark.parametrize("override,key", [
    ("train.optim.lr=-1", "train.optim.lr"),
    ("train.model.lora_r=0", "train.model.lora_r"),
    ("train.sampling.top_p=2", "train.sampling.top_p"),
    ("train.algorithm.name=ppo2", "train.algorithm.name"),
    ("train.checkpoint_every=0", "train.checkpoint_every"),
    ("train.optim.steps=2.5", "train.optim.steps"),
    ("train.reward.weights=[1, 2]", "train.reward.weights"),
    ("report.enabled=maybe", "report.enabled"),
    ("searches=[{strategy: nosuch}]", "searches[0].strategy"),
])
def test_pipeline_errors_name_each_key_once(override, key, workspace, capsys):
    assert main(workspace.pipeline("--set", override)) == 2
    err = capsys.readouterr().err.strip()
    parts = key.split(".")
    doubled = [".".join(parts[:i] + parts[i - 1:]) for i in range(1, len(parts))]  # train.train.optim, train.optim.optim.lr
    assert f": {key}" in err and not any(d in err for d in doubled), err
