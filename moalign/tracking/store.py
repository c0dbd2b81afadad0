"""The store itself: where it is, how long a call to it may take, and what its failures mean."""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

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
