"""A policy from the front in the MLflow Model Registry: `moalign register`, loaded back through
models:/NAME@ALIAS, and served by a real `mlflow models serve` on 127.0.0.1."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import moalign
from moalign.cli import main

from mlflow_server import free_port
from test_use_search import finished_searches

SOUP = "use/soups@0.5,0.5"
NAME, ALIAS = "soup-policy", "champion"
PROMPTS = ["the cat sat on the mat and the dog", "a", "news report"]


def greedy(model, tokenizer, prompts, n):
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return [t.strip() for t in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]


@pytest.fixture(scope="module")
def registered(tmp_path_factory, tiny_llama):
    front = finished_searches(tmp_path_factory, tiny_llama)
    assert main(["register", "--run", SOUP, "--name", NAME, "--alias", ALIAS, "--tracking-uri", front.uri]) == 0
    model, tokenizer = moalign.load_policy(SOUP, front.uri)
    # the run's held-out settings are the served defaults: greedy, 8 new tokens
    return front, greedy(model, tokenizer, PROMPTS, 8)


def test_registered_policy_loads_back_through_its_alias_and_generates(registered, monkeypatch):
    front, expected = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", front.uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@{ALIAS}")
    assert model.metadata.get_input_schema().input_names() == ["prompt"]
    assert model.predict(pd.DataFrame({"prompt": PROMPTS})) == expected
    short = model.predict(pd.DataFrame({"prompt": PROMPTS}), params={"max_new_tokens": 2})
    assert all(e.startswith(s) for s, e in zip(short, expected)) and sum(map(len, short)) < sum(map(len, expected))

    client = MlflowClient(front.uri)
    version = client.get_model_version_by_alias(NAME, ALIAS)
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.source_run_id == front.soup and logged.status == "READY"
    assert logged.params["weight/good"] == "0.5" and logged.params["moalign.role"] == "soup"


def test_register_refuses_a_bad_alias_before_building_anything(registered, capsys):
    front, _ = registered
    assert main(["register", "--run", SOUP, "--name", NAME, "--alias", "latest", "--tracking-uri", front.uri]) == 2
    assert "--alias 'latest': 'latest' alias name (case insensitive) is reserved" in capsys.readouterr().err
    assert len(MlflowClient(front.uri).search_model_versions(f"name = '{NAME}'")) == 1


def _stop(proc, port):
    """The server's whole process group (uvicorn workers too), then wait until the port is closed."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(15)
            break
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            time.sleep(0.2)
        except OSError:
            return True
    return False


def test_mlflow_models_serve_answers_an_invocation(registered, tmp_path):
    front, expected = registered
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@{ALIAS}", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
        # it starts `uvicorn` from PATH: this environment's scripts, as an activated venv has them
        env={**os.environ, "MLFLOW_TRACKING_URI": front.uri,
             "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])})
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", method="POST",
                                         data=json.dumps({"dataframe_records": [{"prompt": p} for p in PROMPTS]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert json.loads(response.read())["predictions"] == expected
    finally:
        stopped = _stop(proc, port)
        log.close()
    assert stopped and proc.poll() is not None
