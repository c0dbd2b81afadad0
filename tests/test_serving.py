"""One endpoint for a whole front (moalign/serving.py): `register --search` logs a search as one
MLflow model that answers each request at the weights it asks for, by the strategy's own mechanism,
equal to `moalign generate` at those weights; bad requests are one clear error (HTTP 400 when
served); `mlflow models serve` answers concurrent requests at different weights."""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from moalign.cli import main
from moalign.generation import generate_file
from moalign.pareto.config import SearchConfig
from moalign.pareto.search import run_search
from moalign.rl.config import RewardConfig, SamplingConfig, SupervisedConfig, TrackingConfig

from mlflow_server import free_port
from rl_helpers import PROMPTS, tiny_config, write_prompts
from test_use_mlflow import _stop

OBJECTIVES = {"good": {"type": "word_share"}, "bad": {"type": "word_share", "word": "bad"}}
W = [[1, 0], [0.5, 0.5], [0, 1]]


@pytest.fixture(scope="module")
def fronts(tiny_llama, tmp_path_factory, one_torch_thread):
    """Soups, grid, Rewards-in-Context and best-of-n searches of the tiny model, each registered."""
    tmp = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg = tiny_config(tiny_llama, write_prompts(tmp / "p.jsonl"), tmp, reward=RewardConfig(objectives=OBJECTIVES),
                      sampling=SamplingConfig(num_generations=2, prompts_per_step=2, max_new_tokens=6),
                      supervised=SupervisedConfig(epochs=1, batch_size=4, lr=0.02),
                      tracking=TrackingConfig(tracking_uri=uri, experiment="serve"))
    cfg.optim.steps = 2
    for strategy, options in (("soups", {}), ("grid", {}), ("rewards_in_context", {"n": 2}), ("best_of_n", {"n": 3})):
        run_search(SearchConfig(train=cfg, strategy=strategy, weights=W, name=strategy, n_bootstrap=100, options=options))
        assert main(["register", "--search", f"serve/{strategy}", "--name", f"front-{strategy}", "--alias", "live",
                     "--tracking-uri", uri]) == 0
    mlflow.set_tracking_uri(uri)
    yield uri, tmp
    mlflow.set_tracking_uri(None)


def model(strategy):
    return mlflow.pyfunc.load_model(f"models:/front-{strategy}@live")


def generated(uri, ref, tmp_path) -> list[str]:
    data = write_prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / f"{ref.replace('/', '_').replace('@', '_')}.jsonl"
    generate_file(ref, data, out, tracking_uri=uri, progress=False)
    return [json.loads(line)["completion"] for line in out.read_text().splitlines()]


@pytest.mark.parametrize("strategy", ["soups", "grid", "rewards_in_context"])
def test_each_answer_equals_moalign_generate_at_those_weights(fronts, strategy, tmp_path):
    uri, _ = fronts
    front = model(strategy)
    for w in W:
        answers = front.predict(pd.DataFrame({"prompt": PROMPTS}), params={"weights": {"good": w[0], "bad": w[1]}})
        assert [a["completion"] for a in answers] == generated(uri, f"serve/{strategy}@{w[0]},{w[1]}", tmp_path)
        assert all(a["weights"] == [w[0], w[1]] for a in answers)
    described = front.predict(pd.DataFrame({"prompt": ["the cat"]}), params={"weights": {"good": 0.5, "bad": 0.5}})[0]
    expected = {"soups": "soup w=0.5/0.5", "grid": "nearest trained policy trained w=0.5/0.5 (L1 distance 0.000)",
                "rewards_in_context": "rewards_in_context policy told targets"}[strategy]
    assert described["policy"].startswith(expected)


def test_a_trade_off_between_the_points_is_merged_once_and_cached(fronts):
    front = model("soups")
    server = front.unwrap_python_model().server
    frame = pd.DataFrame({"prompt": ["the cat sat"]})
    first = front.predict(frame, params={"weights": {"good": 0.3, "bad": 0.7}})
    misses = server.misses
    again = front.predict(frame, params={"weights": {"good": 3.0, "bad": 7.0}})  # the same trade-off, unnormalised
    assert first == again and server.misses == misses and server.hits >= 1
    assert first[0]["policy"] == "soup w=0.3/0.7" and first[0]["weights"] == [0.3, 0.7]
    for w in range(server.cache_size + 2):  # bounded: the oldest mixes leave
        front.predict(frame, params={"weights": {"good": float(w + 1), "bad": 1.0}})
    assert len(server.cache) == server.cache_size
    grid = model("grid")
    near = grid.predict(frame, params={"weights": {"good": 0.8, "bad": 0.2}})
    assert near[0]["policy"] == "nearest trained policy trained w=1/0 (L1 distance 0.400)"
    alone = grid.predict(frame, params={"weights": {"good": 0.8}})  # an objective left unnamed weighs 0
    assert alone[0]["weights"] == [1.0, 0.0] and alone[0]["policy"].endswith("(L1 distance 0.000)")


def test_best_of_n_with_reference_free_objectives_answers_any_trade_off(fronts):
    answers = model("best_of_n").predict(pd.DataFrame({"prompt": PROMPTS[:3]}), params={"weights": {"good": 1.0, "bad": 0.0}})
    assert len(answers) == 3 and all(a["policy"] == "best_of_3 w=1/0" for a in answers)


@pytest.mark.parametrize("weights,message", [
    ({"good": 1.0, "ugly": 1.0}, "ugly"),  # MLflow's schema names the key it does not know
    ({"good": -1.0, "bad": 2.0}, "must be finite and non-negative"),
    ({"good": 0.0, "bad": 0.0}, "at least one must be positive"),
])
def test_a_bad_request_is_one_clear_error(fronts, weights, message):
    with pytest.raises(MlflowException, match=message) as info:
        model("soups").predict(pd.DataFrame({"prompt": ["x"]}), params={"weights": weights})
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"


def test_register_refuses_a_search_it_cannot_serve(fronts, capsys):
    uri, _ = fronts
    assert main(["register", "--search", "serve/nosuch", "--name", "x", "--tracking-uri", uri]) == 2
    assert "has no search named 'nosuch'" in capsys.readouterr().err


def post(port, body) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", method="POST",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_mlflow_models_serve_answers_concurrent_requests_at_different_weights(fronts, tmp_path):
    uri, _ = fronts
    expected = {w[0]: model("soups").predict(pd.DataFrame({"prompt": PROMPTS[:4]}),
                                             params={"weights": {"good": w[0], "bad": w[1]}}) for w in W}
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/front-soups@live", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri,
             "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])})
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
        got = {}

        def ask(w):
            got[w[0]] = post(port, {"dataframe_records": [{"prompt": p} for p in PROMPTS[:4]],
                                    "params": {"weights": {"good": w[0], "bad": w[1]}}})

        threads = [threading.Thread(target=ask, args=(w,)) for w in W]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        for w in W:
            status, body = got[w[0]]
            assert status == 200 and body["predictions"] == expected[w[0]]
        status, body = post(port, {"dataframe_records": [{"prompt": "x"}], "params": {"weights": {"ugly": 1.0}}})
        assert status == 400 and "ugly" in json.dumps(body), (status, body)
        status, body = post(port, {"dataframe_records": [{"prompt": "x"}], "params": {"weights": {"good": 0.0, "bad": 0.0}}})
        assert status == 400 and "at least one must be positive" in json.dumps(body), (status, body)
    finally:
        stopped = _stop(proc, port)
        log.close()
    assert stopped


def test_the_serving_benchmark_runs(capsys, one_torch_thread):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_serving.py"
    spec = importlib.util.spec_from_file_location("bench_serving", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--tiny", "--repeats", "1", "--prompts", "2"]) == 0
    out = capsys.readouterr().out
    assert "cache hit" in out and "new weight vector" in out and "per-policy path" in out
