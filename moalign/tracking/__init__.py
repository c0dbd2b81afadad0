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
from moalign.tracking.store import (  # noqa: F401 (the package's public names)
    EXPERIMENT_TAGS, HTTP_DEFAULTS, PARAM_LIMIT, bound_http_retries, describe_failure, flatten, read_artifact_text,
    read_table, resolve_tracking_uri, sqlite_path,
)
from moalign.tracking.tracker import MlflowTracker, NullTracker, make_tracker  # noqa: F401
from moalign.tracking.ui import experiment_url, launch_ui, stop_group  # noqa: F401
