"""What is read back: runs by filter or id, experiments, metric histories, artifacts (a mixin of
`MlflowTracker`, which supplies `client`, `experiment` and `_guard`)."""
from __future__ import annotations

from moalign.tracking.store import _download_text, _table


class RunLookup:
    def find_runs(self, filter_string: str, order_by: list[str] | None = None) -> list:
        """Runs of this experiment matching an MLflow filter, e.g. "tags.`moalign.kind` = 'search'"."""
        if self.experiment_id is None and self.experiment:  # another process may have created it since
            with self._guard(f"open experiment {self.experiment!r}"):
                self.experiment_id = self._existing(self.experiment)
        if self.experiment_id is None:  # not created yet: no runs
            return []
        with self._guard("search runs"):
            return self.client.search_runs([self.experiment_id], filter_string, order_by=order_by, max_results=10_000)

    def get_run(self, run_id):
        with self._guard(f"read run {run_id}"):
            return self.client.get_run(run_id)

    def find_run(self, run_id):
        """The run, or None when the store has no run `run_id`."""
        from mlflow.exceptions import MlflowException

        with self._guard(f"read run {run_id}"):
            try:
                return self.client.get_run(run_id)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                return None

    def find_experiment(self, name: str):
        """The experiment called `name` (None if there is none), without creating it."""
        with self._guard(f"read experiment {name!r}"):
            return self.client.get_experiment_by_name(name)

    def experiments(self) -> list:
        """The store's active experiments."""
        with self._guard("list experiments"):
            return self.client.search_experiments()

    def metric_history(self, run_id, key) -> dict[int, float]:
        """{step: value} of metric `key` in the run (empty if it was never logged)."""
        with self._guard(f"read metric {key!r} of run {run_id}"):
            return {int(m.step): m.value for m in self.client.get_metric_history(run_id, key)}

    def last_step(self, run_id, key) -> int | None:
        """The largest step logged for metric `key` in the run, None if none was logged."""
        return max(self.metric_history(run_id, key), default=None)

    def read_text(self, run_id, artifact_file) -> str | None:
        """An artifact's text, None if the run has no such artifact."""
        with self._guard(f"read {artifact_file} of run {run_id}"):
            return _download_text(self.client, run_id, artifact_file)

    def read_table(self, run_id, artifact_file):
        return _table(self.read_text(run_id, artifact_file))
