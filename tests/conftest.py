import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest workers on two cores: one torch thread each, or the two workers'
    # threads fight over the cores (tiny-model decoding ran ~25x slower oversubscribed).
    import torch

    torch.set_num_threads(1)

from tiny import make_tiny_llama, make_tiny_nli  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    return str(make_tiny_llama(tmp_path_factory.mktemp("tiny_llama")))


@pytest.fixture(scope="session")
def tiny_nli(tmp_path_factory) -> str:
    return str(make_tiny_nli(tmp_path_factory.mktemp("tiny_nli")))


@pytest.fixture(scope="session")
def word_overlap_module(tmp_path_factory) -> str:
    """A local HF evaluate module: per-sample share of prediction words found in the reference."""
    path = tmp_path_factory.mktemp("evaluate_module") / "word_overlap.py"
    path.write_text('''
import datasets
import evaluate


class WordOverlap(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="share of prediction words found in the reference", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        scores = []
        for p, r in zip(predictions, references):
            words = p.split()
            scores.append(sum(w in r.split() for w in words) / len(words) if words else 0.0)
        return {"overlap": scores}
''')
    return str(path)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices: a second intra-op thread only adds contention (25x slower on a busy 2-core box)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a temporary directory (the default MLflow store is a file in the cwd)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Under `pytest -n N --dist loadgroup` (`make test`): the tests of a file that share a
    module-scoped fixture (a trained search, a Ray cluster, an MLflow server) stay on one worker,
    so it is built once; every other test goes to whichever worker is free."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info and any(d.scope == "module" for defs in info.name2fixturedefs.values() for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
