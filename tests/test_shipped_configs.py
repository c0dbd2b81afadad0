"""Every shipped pipeline validates (keys, objectives, weights, data) without training anything."""
from pathlib import Path

import pytest

from moalign.pipeline import load_pipeline

from conftest import REPO


@pytest.mark.parametrize("path", sorted((REPO / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_pipeline_validates(path: Path, monkeypatch):
    monkeypatch.chdir(REPO)
    config, searches = load_pipeline(path)
    assert searches and all(s.train is config.train for s in searches)
    assert config.train.tracking.experiment == config.experiment


def test_quickstart_data_has_150_distinct_texts_with_references():
    from moalign.data import load_prompt_records

    records = load_prompt_records(REPO / "pipelines/data/summaries.jsonl")
    assert len(records) == 150 and len({r["source"] for r in records}) == 150
    assert all(r["source"] and r["references"] and r["source"] in r["prompt"] for r in records)
