"""Weights from preferences (moalign/preferences.py): on synthetic raters with known weights the
inferred weights converge to them as judgements grow; contradictory or one-sided labels say they
pin nothing down; and `moalign prefer` on a real front logs its answer under the search, refusing
bad label files in one line."""
import json

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from moalign.cli import main
from moalign.errors import MoalignError
from moalign.pareto.config import SearchConfig
from moalign.pareto.search import run_search
from moalign.preferences import FrontAnswers, infer_weights
from moalign.rl.config import RewardConfig, SamplingConfig, TrackingConfig

from rl_helpers import tiny_config, write_prompts

TRUE = np.array([0.7, 0.3])


def synthetic_front(rng, prompts=300, policies=6) -> FrontAnswers:
    keys = [f"{w:.4f},{1 - w:.4f}" for w in np.linspace(0, 1, policies)]
    scores = rng.normal(size=(policies, prompts, 2)) * [10.0, 3.0]  # objectives on different scales
    return FrontAnswers(["quality", "brevity"], ["maximize", "maximize"], keys, [f"p{i}" for i in range(prompts)],
                        scores, {k: {} for k in keys}, {k: [float(x) for x in k.split(",")] for k in keys})


def rater(answers: FrontAnswers, n: int, rng, weights=TRUE, strength=3.0) -> pd.DataFrame:
    """A rater who prefers a over b with probability sigmoid(strength * w . d)."""
    rows = []
    for _ in range(n):
        a, b = rng.choice(len(answers.policies), 2, replace=False)
        rows.append({"prompt": answers.prompts[rng.integers(len(answers.prompts))], "a": answers.policies[a],
                     "b": answers.policies[b]})
    frame = pd.DataFrame(rows)
    p = 1 / (1 + np.exp(-strength * answers.features(frame) @ weights))
    frame["winner"] = np.where(rng.random(n) < p, "a", "b")
    return frame


def test_inferred_weights_converge_to_the_raters_as_judgements_grow():
    errors = {50: [], 200: []}
    for seed in range(6):
        rng = np.random.default_rng(seed)
        answers = synthetic_front(rng)
        for n in errors:
            result = infer_weights(rater(answers, n, rng), answers, n_boot=100, seed=seed)
            errors[n].append(float(np.abs(result.weights - TRUE).max()))
            assert (result.low <= result.weights + 1e-9).all() and (result.weights <= result.high + 1e-9).all()
    mean = {n: float(np.mean(e)) for n, e in errors.items()}
    # measured: mean 0.048 at 50 judgements (worst 0.11), 0.032 at 200 (worst 0.058); max abs error, 6 raters
    assert mean[200] < 0.06 and mean[50] < 0.15 and mean[200] < mean[50], mean


def test_the_interval_covers_the_truth_and_narrows_with_more_judgements():
    rng = np.random.default_rng(11)
    answers = synthetic_front(rng)
    few = infer_weights(rater(answers, 40, rng), answers, n_boot=200)
    many = infer_weights(rater(answers, 400, rng), answers, n_boot=200)
    assert (many.high - many.low).max() < (few.high - few.low).max()
    assert (many.low <= TRUE).all() and (TRUE <= many.high).all()
    assert many.heldout_n > 0 and many.heldout_accuracy > 0.7  # judgements it did not see, predicted
    assert many.nearest == "0.8000,0.2000"  # the front's policy nearest to 0.7/0.3


@pytest.mark.parametrize("labels", ["coin", "one-sided"])
def test_contradictory_or_one_sided_labels_say_they_pin_nothing_down(labels):
    rng = np.random.default_rng(3)
    answers = synthetic_front(rng)
    frame = rater(answers, 100, rng)
    frame["winner"] = rng.choice(["a", "b"], len(frame)) if labels == "coin" else "a"
    result = infer_weights(frame, answers, n_boot=200)
    assert "pin nothing down" in result.note, result.note
    honest = infer_weights(rater(answers, 100, rng), answers, n_boot=200)
    assert "pin nothing down" not in honest.note  # the same number of a consistent rater's judgements do


def test_too_few_judgements_are_refused():
    rng = np.random.default_rng(0)
    answers = synthetic_front(rng)
    with pytest.raises(MoalignError, match="at least 10 are needed"):
        infer_weights(rater(answers, 5, rng), answers)


@pytest.fixture(scope="module")
def front(tiny_llama, tmp_path_factory, one_torch_thread):
    """A best-of-n front on the tiny model (no training), with reference-free objectives."""
    tmp = tmp_path_factory.mktemp("prefer")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg = tiny_config(tiny_llama, write_prompts(tmp / "p.jsonl"), tmp,
                      reward=RewardConfig(objectives={"good": {"type": "word_share"}, "short": {"type": "verbosity"}}),
                      sampling=SamplingConfig(num_generations=2, prompts_per_step=2, max_new_tokens=6),
                      tracking=TrackingConfig(tracking_uri=uri, experiment="prefer"))
    cfg.data.eval_fraction = 0.5
    run_search(SearchConfig(train=cfg, strategy="best_of_n", weights=[[1, 0], [0.5, 0.5], [0, 1]], name="bon",
                            n_bootstrap=100, options={"n": 4}))
    return uri, tmp


def test_prefer_writes_pairs_takes_labels_and_logs_its_answer_under_the_search(front, tmp_path, capsys):
    uri, _ = front
    pairs = tmp_path / "pairs.jsonl"
    assert main(["prefer", "--search", "prefer/bon", "--write-pairs", str(pairs), "--pairs", "12",
                 "--tracking-uri", uri]) == 0
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert rows and all(r["a"] != r["b"] and r["completion_a"] != r["completion_b"] for r in rows)
    for i, r in enumerate(rows * 2):  # a rater who prefers the shorter answer
        r["winner"] = "a" if len(r["completion_a"].split()) < len(r["completion_b"].split()) else "b"
    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join(json.dumps(r) for r in rows * 2))
    capsys.readouterr()
    assert main(["prefer", "--search", "prefer/bon", "--labels", str(labels), "--tracking-uri", uri,
                 "--n-bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "objective" in out and "weight" in out and "logged as run" in out
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("prefer").experiment_id],
                                "tags.`moalign.role` = 'preferences'")
    assert run.data.metrics["n_judgements"] == 2 * len(rows) and "weight/short" in run.data.params
    judged = json.loads(client.download_artifacts(run.info.run_id, "judgements.json", str(tmp_path)) and
                        (tmp_path / "judgements.json").read_text())
    assert len(judged["data"]) == 2 * len(rows)
    # the preference run is no policy of the front
    from moalign.policies import front_policies

    assert "preferences" not in set(front_policies("prefer/bon", uri)["role"])


@pytest.mark.parametrize("content,message", [
    ('{"prompt": "x", "a": "base"}', "expected an object with prompt, a, b and winner"),
    ('not json', "malformed JSON"),
    ('{"prompt": "PROMPT", "a": "0.3,0.7", "b": "base", "winner": "a"}', "is no policy of the front"),
    ('{"prompt": "PROMPT", "a": "1,0", "b": "base", "winner": "maybe"}', "winner must be a, b or tie"),
    ('{"prompt": "not held out", "a": "1,0", "b": "base", "winner": "a"}', "none of the front's held-out prompts"),
    ('{"prompt": "PROMPT", "a": "1,0", "b": "base", "winner": "a"}', "at least 10 are needed"),
])
def test_bad_label_files_are_one_line(front, tmp_path, capsys, content, message):
    uri, tmp = front
    from moalign.preferences import load_front

    prompt = load_front("prefer/bon", uri)[0].prompts[0]
    path = tmp_path / "labels.jsonl"
    path.write_text(content.replace("PROMPT", prompt))
    capsys.readouterr()
    assert main(["prefer", "--search", "prefer/bon", "--labels", str(path), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_the_report_shows_the_inferred_weights(front, tmp_path):
    from moalign import infer_weights as infer
    from moalign.preferences import load_front
    from moalign.reports.build import build_report

    uri, _ = front
    answers = load_front("prefer/bon", uri)[0]
    judgements = rater(answers, 30, np.random.default_rng(0), weights=np.array([0.2, 0.8]), strength=5.0)
    result = infer("prefer/bon", judgements, uri)  # the Python API, logged under the search
    assert result.n == 30 and result.nearest_ref.startswith("prefer/bon@")
    build_report("prefer", tmp_path / "report", tracking_uri=uri)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Weights from preferences: bon" in text and "weight short [95% CI]" in text and "nearest policy" in text
