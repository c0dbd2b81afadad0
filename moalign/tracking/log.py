"""What a run writes: params, batched metrics, tables, dicts, artifacts, tags (a mixin of
`MlflowTracker`, which supplies `client` and `_guard`)."""
from __future__ import annotations

import json
import time
from typing import Iterable

import pandas as pd

from moalign.tracking.store import flatten


class RunLogging:
    def log_params(self, run_id, params) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        with self._guard(f"log params of run {run_id}"):
            for start in range(0, len(items), 100):  # MLflow caps params per batch at 100
                self.client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id, rows: Iterable[tuple[int, dict]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for step, metrics in rows for k, v in metrics.items()]
        with self._guard(f"log metrics of run {run_id}"):
            for start in range(0, len(items), 1000):  # MLflow caps metrics per batch at 1000
                self.client.log_batch(run_id, metrics=items[start : start + 1000])

    def log_table(self, run_id, frame: pd.DataFrame, artifact_file: str) -> None:
        with self._guard(f"log {artifact_file} of run {run_id}"):
            self.client.log_table(run_id, data=frame, artifact_file=artifact_file)

    def log_dict(self, run_id, data, artifact_file) -> None:
        """YAML or JSON in the dict's own key order: MLflow's log_dict sorts YAML keys, which would
        reorder `reward.objectives` against `reward.weights` when a config is read back."""
        import yaml

        text = (yaml.safe_dump(data, sort_keys=False) if artifact_file.endswith((".yaml", ".yml"))
                else json.dumps(data, indent=2))
        with self._guard(f"log {artifact_file} of run {run_id}"):
            self.client.log_text(run_id, text, artifact_file)

    def log_artifacts(self, run_id, local_dir, artifact_path=None) -> None:
        with self._guard(f"log artifacts of run {run_id}"):
            self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def set_tags(self, run_id, tags) -> None:
        from mlflow.entities import RunTag

        with self._guard(f"set tags of run {run_id}"):
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
