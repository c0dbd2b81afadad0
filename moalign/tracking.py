"""MLflow, in one place: the rest of moalign talks to a Tracker and runs without MLflow.

Default store: a SQLite file `mlflow.db` in the working directory, or `$MLFLOW_TRACKING_URI`.
Metrics go in batches (`log_batch`), never one call per value.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

import pandas as pd

PARAM_LIMIT = 6000  # MLflow's maximum length of a param value


def resolve_tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def flatten(params: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": "1"}; lists and None become JSON."""
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:PARAM_LIMIT]
    return out


def read_artifact_text(client, run_id: str, path: str) -> str | None:
    """Text of a run's artifact, or None when the run has no such artifact."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception:  # MLflow raises several types for a missing artifact
            return None
        return Path(local).read_text(encoding="utf-8")


def read_table(client, run_id: str, path: str) -> pd.DataFrame | None:
    """A table written by `log_table` (JSON with columns and data), or None if absent."""
    text = read_artifact_text(client, run_id, path)
    if text is None:
        return None
    data = json.loads(text)
    return pd.DataFrame(data["data"], columns=data["columns"])


class NullTracker:
    """Tracking switched off: every call does nothing."""

    uri = None

    def start_run(self, run_name=None, tags=None, parent_run_id=None) -> str | None:
        return None

    def resume_run(self, run_id) -> None: ...
    def log_params(self, run_id, params) -> None: ...
    def log_metrics(self, run_id, rows) -> None: ...
    def log_table(self, run_id, frame, artifact_file) -> None: ...
    def log_dict(self, run_id, data, artifact_file) -> None: ...
    def log_artifacts(self, run_id, local_dir, artifact_path=None) -> None: ...
    def set_tags(self, run_id, tags) -> None: ...
    def end_run(self, run_id, status="FINISHED") -> None: ...

    def find_runs(self, filter_string: str) -> list:
        return []

    def read_table(self, run_id, artifact_file):
        return None

    def get_run(self, run_id):
        return None


class MlflowTracker(NullTracker):
    def __init__(self, experiment: str = "moalign", tracking_uri: str | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = resolve_tracking_uri(tracking_uri)
        self.client = MlflowClient(self.uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)

    def start_run(self, run_name=None, tags=None, parent_run_id=None) -> str:
        tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id  # nests the run under its search in the UI
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        return run.info.run_id

    def resume_run(self, run_id) -> None:
        self.client.update_run(run_id, status="RUNNING")

    def log_params(self, run_id, params) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):  # MLflow caps params per batch at 100
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id, rows: Iterable[tuple[int, dict]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for step, metrics in rows for k, v in metrics.items()]
        for start in range(0, len(items), 1000):  # MLflow caps metrics per batch at 1000
            self.client.log_batch(run_id, metrics=items[start : start + 1000])

    def log_table(self, run_id, frame: pd.DataFrame, artifact_file: str) -> None:
        self.client.log_table(run_id, data=frame, artifact_file=artifact_file)

    def log_dict(self, run_id, data, artifact_file) -> None:
        self.client.log_dict(run_id, data, artifact_file)

    def log_artifacts(self, run_id, local_dir, artifact_path=None) -> None:
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def set_tags(self, run_id, tags) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def end_run(self, run_id, status="FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def find_runs(self, filter_string: str) -> list:
        """Runs of this experiment matching an MLflow filter, e.g. "tags.`moalign.kind` = 'search'"."""
        return self.client.search_runs([self.experiment_id], filter_string, max_results=10_000)

    def get_run(self, run_id):
        return self.client.get_run(run_id)

    def read_table(self, run_id, artifact_file):
        return read_table(self.client, run_id, artifact_file)


def make_tracker(enabled: bool, experiment: str, tracking_uri: str | None):
    return MlflowTracker(experiment, tracking_uri) if enabled else NullTracker()


def launch_ui(host: str = "127.0.0.1", port: int = 5000, tracking_uri: str | None = None) -> int:
    """`mlflow ui` on the project's store (blocks until interrupted)."""
    uri = resolve_tracking_uri(tracking_uri)
    print(f"MLflow UI on http://{host}:{port} (store: {uri}); Ctrl-C to stop")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
