"""`moalign ui`: the MLflow UI on the project's store, in a process group of its own."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from moalign.errors import MoalignError
from moalign.tracking.tracker import MlflowTracker


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
