"""The tracker: `MlflowTracker` opens the store and its experiment and starts and ends runs,
`NullTracker` stands in when tracking is off; `make_tracker` picks one."""
from __future__ import annotations

from contextlib import contextmanager

from moalign.errors import MoalignError
from moalign.tracking.log import RunLogging
from moalign.tracking.lookup import RunLookup
from moalign.tracking.store import EXPERIMENT_TAGS, _store_lock, bound_http_retries, describe_failure, resolve_tracking_uri, sqlite_path


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

    def last_step(self, run_id, key) -> int | None:
        return None

    def read_text(self, run_id, artifact_file) -> str | None:
        return None

    def find_runs(self, filter_string: str) -> list:
        return []

    def read_table(self, run_id, artifact_file):
        return None

    def get_run(self, run_id):
        return None


class MlflowTracker(RunLogging, RunLookup, NullTracker):
    """Every call is bounded in time and fails with one line (see `moalign.tracking`). This class
    opens the store and the experiment and starts and ends runs; what it logs is `RunLogging`'s
    (log.py), what it reads back `RunLookup`'s (lookup.py)."""

    def __init__(self, experiment: str | None = "moalign", tracking_uri: str | None = None):
        """Open (creating if needed) `experiment` in the store; None opens the store only."""
        from mlflow.tracking import MlflowClient

        bound_http_retries()
        self.uri = resolve_tracking_uri(tracking_uri)
        self._lost = None  # the message, once the server is known to be unreachable
        database = sqlite_path(self.uri)
        if database is not None:  # MLflow retries an unwritable SQLite path for minutes
            from moalign.data import check_writable

            try:
                check_writable(database)
            except MoalignError as exc:
                raise MoalignError(f"MLflow store {self.uri}: {str(exc).removeprefix(f'{database}: ')}") from None
        self.experiment = experiment
        with self._guard(f"open experiment {experiment!r}" if experiment else "open the store"), _store_lock(self.uri):
            self.client = MlflowClient(self.uri)  # opens (and for a new SQLite file, creates) the store
            # the probe (is the store there?); a missing experiment is created with its first run, so
            # input refused before any run starts leaves no empty experiment behind
            self.experiment_id = self._existing(experiment) if experiment else None
            if experiment is None:
                self.client.search_experiments(max_results=1)

    @classmethod
    def for_run(cls, run_id: str, tracking_uri: str | None = None):
        """(tracker on the experiment of run `run_id`, the run): what resuming a run needs."""
        tracker = cls(None, tracking_uri)
        run = tracker.get_run(run_id)
        tracker.experiment_id = run.info.experiment_id
        return tracker, run

    def create_experiment(self) -> str | None:
        """The experiment's id, the experiment created if it does not exist yet (what a first run does)."""
        if self.experiment_id is None and self.experiment:
            with self._guard(f"create experiment {self.experiment!r}"), _store_lock(self.uri):
                self.experiment_id = self._experiment_id(self.experiment)
        return self.experiment_id

    def _existing(self, name: str) -> str | None:
        """The id of experiment `name`, None where it does not exist yet; a deleted one is an error."""
        found = self.client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage == "deleted":
            raise MoalignError(f"MLflow experiment {name!r} is deleted in {self.uri}: restore it "
                               f"(mlflow experiments restore --experiment-id {found.experiment_id}) or pick another name")
        return None if found is None else found.experiment_id

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name, tags=EXPERIMENT_TAGS)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                found = self.client.get_experiment_by_name(name)  # another process created it just now
        if found.lifecycle_stage == "deleted":
            raise MoalignError(f"MLflow experiment {name!r} is deleted in {self.uri}: restore it "
                               f"(mlflow experiments restore --experiment-id {found.experiment_id}) or pick another name")
        return found.experiment_id

    @contextmanager
    def _guard(self, what: str):
        """MLflow and connection errors as one MoalignError; after a lost server, fail at once."""
        if self._lost:
            raise MoalignError(self._lost)
        try:
            yield
        except MoalignError:
            raise
        except Exception as exc:
            described = describe_failure(self.uri, what, exc)
            if described is None:
                raise
            message, lost = described
            if lost:
                self._lost = message
            raise MoalignError(message) from None

    def start_run(self, run_name=None, tags=None, parent_run_id=None) -> str:
        tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id  # nests the run under its search in the UI
        self.create_experiment()
        with self._guard("start a run"):
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        return run.info.run_id

    def resume_run(self, run_id) -> None:
        with self._guard(f"resume run {run_id}"):
            self.client.update_run(run_id, status="RUNNING")

    def end_run(self, run_id, status="FINISHED") -> None:
        """Mark the run ended; a no-op once the server is known to be gone (the error that said
        so is the one to report, not a second one from here)."""
        if self._lost:
            return
        with self._guard(f"mark run {run_id} {status}"):
            self.client.set_terminated(run_id, status)


def make_tracker(enabled: bool, experiment: str, tracking_uri: str | None):
    return MlflowTracker(experiment, tracking_uri) if enabled else NullTracker()
