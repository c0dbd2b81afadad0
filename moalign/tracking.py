"""MLflow, in one place: the rest of moalign talks to a Tracker and runs without MLflow.

Default store: a SQLite file `mlflow.db` in the working directory, or `$MLFLOW_TRACKING_URI`.
Metrics go in batches (`log_batch`), never one call per value.

Failures are one line (`MoalignError`), and bounded in time. MLflow's own HTTP defaults retry a
failed request 7 times with exponential backoff and a 120 s timeout: minutes of silence before an
unreachable server is reported. moalign sets (with `os.environ.setdefault`, so the variables
still override) 3 tries (`MLFLOW_HTTP_REQUEST_MAX_RETRIES=2`), a 1 s backoff factor and a 10 s
timeout: a refused connection is reported in about 3 s, a server that accepts but never answers
in about 35 s (3 x 10 s + backoff). The tracker probes the store when it is created, so a wrong
URI fails before any model loads; a server that goes away later fails the next call within the
same bound, and every later call at once.

The MLflow 3 UI opens an experiment on its GenAI traces overview unless its "Model training"
view is chosen: MLflow 3.17 takes that from the page's `workflowType` query parameter, else from
the browser's saved choice (`mlflow.workflowType` in local storage, GenAI when unset); earlier 3.x
releases read the experiment tag `mlflow.experimentKind`. moalign tags the experiments it creates
and prints links that carry `workflowType=machine_learning` (`experiment_url`), so either way an
experiment opens on its training runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import pandas as pd

from moalign.errors import MoalignError

PARAM_LIMIT = 6000  # MLflow's maximum length of a param value
# what an experiment is for, as the MLflow UI's "Machine learning" kind (see the module docstring)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def bound_http_retries() -> None:
    """moalign's bounded MLflow HTTP retries (see the module docstring), unless the user set them.
    urllib3 logs a warning at every retry ("Retrying (Retry(total=1...)) after connection
    broken..."): a server that is down would print several lines before moalign's one; the one
    line that follows says all of it (server, tries, timeout)."""
    import logging

    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def resolve_tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI (None for other stores and in-memory ones)."""
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    return Path(database) if database and database != ":memory:" else None


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


def _connection_failure(exc: BaseException):
    """The `requests` error behind a failed MLflow call, if the server could not be reached at all
    (MLflow re-raises it as a plain MlflowException, keeping it as the cause or context)."""
    import requests

    while exc is not None:
        if isinstance(exc, requests.RequestException):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _reason(exc: BaseException) -> str:
    """A few words for why a request failed; urllib3's messages nest the whole retry story."""
    text = str(exc)
    for pattern in (r"\[Errno -?\d+\] ([^'\")]+)", r"(Read timed out)", r"(too many \d+ error responses)"):
        found = re.search(pattern, text)
        if found:
            return found.group(1).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def describe_failure(uri: str, what: str, exc: BaseException) -> tuple[str, bool] | None:
    """(one-line message, whether the server is unreachable) for a failed MLflow call, or None
    when `exc` is not a tracking failure (a bug in moalign, to be raised as it is)."""
    from mlflow.exceptions import MlflowException

    failure = _connection_failure(exc)
    if failure is not None:
        tries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 7)) + 1
        timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
        return (f"MLflow tracking server {uri} is not answering ({what}: {_reason(failure)}); gave up after "
                f"{tries} tries with a {timeout} s timeout each (MLFLOW_HTTP_REQUEST_MAX_RETRIES, "
                f"MLFLOW_HTTP_REQUEST_TIMEOUT)"), True
    if isinstance(exc, MlflowException):
        detail = (exc.message or str(exc)).strip().splitlines()
        return f"MLflow ({uri}): {what} failed: {detail[0] if detail else exc.error_code}", False
    if isinstance(exc, OSError):  # a local store or artifact folder that cannot be written
        return f"MLflow ({uri}): {what} failed: {exc}".splitlines()[0], False
    return None


def _missing_artifact(exc: BaseException) -> bool:
    """MLflow 3 raises MlflowException(RESOURCE_DOES_NOT_EXIST) for a missing artifact, from a
    SQLite/local store and from an HTTP server alike; anything else is a real failure."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def _download_text(client, run_id: str, path: str) -> str | None:
    """Text of a run's artifact, None when it has no such artifact; other failures raise as they are."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception as exc:
            if _missing_artifact(exc):
                return None
            raise
        return Path(local).read_text(encoding="utf-8")


def _table(text: str | None) -> pd.DataFrame | None:
    if text is None:
        return None
    data = json.loads(text)  # written by log_table: JSON with columns and data
    return pd.DataFrame(data["data"], columns=data["columns"])


def read_artifact_text(client, run_id: str, path: str) -> str | None:
    """Text of a run's artifact, or None when the run has no such artifact (MLflow reports an
    unknown run the same way). Any other failure, such as an unreachable server, is a one-line
    MoalignError, never "no artifact"."""
    try:
        return _download_text(client, run_id, path)
    except Exception as exc:
        described = describe_failure(client.tracking_uri, f"read {path} of run {run_id}", exc)
        if described is None:
            raise
        raise MoalignError(described[0]) from None


def read_table(client, run_id: str, path: str) -> pd.DataFrame | None:
    """A table written by `log_table` (JSON with columns and data), or None if absent."""
    return _table(read_artifact_text(client, run_id, path))


@contextmanager
def _store_lock(uri: str):
    """One process at a time opens a SQLite store and creates the experiment: MLflow creates a
    fresh store's tables without a lock, and two processes doing it at once crash or leave a
    half-migrated database. MLflow's own lock file (in the temp folder) guards it; Windows has
    none, as in MLflow's own `_safe_initialize_tables`."""
    path = sqlite_path(uri)
    if path is None or os.name == "nt":
        yield
        return
    from mlflow.utils.file_utils import ExclusiveFileLock

    digest = hashlib.md5(str(path.resolve()).encode(), usedforsecurity=False).hexdigest()
    with ExclusiveFileLock(os.path.join(tempfile.gettempdir(), f"moalign-store-{digest}.lock")):
        yield


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


class MlflowTracker(NullTracker):
    """Every call is bounded in time and fails with one line (see the module docstring)."""

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

    def end_run(self, run_id, status="FINISHED") -> None:
        """Mark the run ended; a no-op once the server is known to be gone (the error that said
        so is the one to report, not a second one from here)."""
        if self._lost:
            return
        with self._guard(f"mark run {run_id} {status}"):
            self.client.set_terminated(run_id, status)

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


def make_tracker(enabled: bool, experiment: str, tracking_uri: str | None):
    return MlflowTracker(experiment, tracking_uri) if enabled else NullTracker()


def experiment_url(ui: str, experiment_id: str) -> str:
    """The experiment's training runs in the MLflow UI at `ui` (see the module docstring)."""
    return f"{ui}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _check_port(host: str, port: int) -> None:
    """One line now, rather than a server that dies later with a traceback about the address."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise MoalignError(f"cannot serve the MLflow UI on {host}:{port} ({exc.strerror}): pick another --port") from None


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop `proc` and everything it started (its process group): SIGTERM, then SIGKILL for what
    is left after `grace` seconds. A Ctrl-C meanwhile does not cut this short."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
    try:
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader: a zombie would keep the group "alive"
            if not _group_alive(proc.pid):
                break
            time.sleep(0.1)
        else:
            _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _main_thread() -> bool:  # signal handlers can only be changed there
    return threading.current_thread() is threading.main_thread()


def launch_ui(host: str = "127.0.0.1", port: int = 5000, tracking_uri: str | None = None) -> int:
    """`mlflow ui` on the project's store; blocks until the server stops or Ctrl-C/SIGTERM.

    The server and its workers run in a process group of their own, which is stopped whatever
    ends the wait: a signal (raised here as KeyboardInterrupt) or a failure."""
    tracker = MlflowTracker(None, tracking_uri)  # a wrong URI fails here, in one line
    _check_port(host, port)
    ui = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    print(f"MLflow UI on {ui} (store: {tracker.uri}); Ctrl-C to stop")
    for experiment in tracker.experiments():
        if experiment.name != "Default":
            print(f"  {experiment.name}: {experiment_url(ui, experiment.experiment_id)}")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracker.uri, "--host", host, "--port", str(port)]
    # MLflow's job runner (seven huey consumers, for GenAI judges and trace roll-ups) serves nothing
    # moalign logs and doubles the start-up time; the variable still turns it on
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    # "Ctrl-C to stop" holds even when this process was started with SIGINT ignored (`cmd &` in a
    # script, some CI runners): Python then leaves it ignored, and the UI could only be killed.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if _main_thread() else None
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)  # its own group: no terminal's Ctrl-C of its own
    try:
        return proc.wait()
    finally:
        stop_group(proc)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
