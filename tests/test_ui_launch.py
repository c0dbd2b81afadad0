"""`moalign ui` as a user runs it: a real subprocess on a free port. Ctrl-C (SIGINT) or SIGTERM stops
the MLflow server and every worker it started; the experiment link it prints opens on the training
runs (not MLflow 3's GenAI overview); a search's front.html is interactive in the run's artifacts."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from moalign.cli import main
from moalign.tracking import MlflowTracker
from moalign.reports.interactive import save_front_html

from mlflow_server import free_port
from test_ui_front import DIRS, SAMPLES, TABLE, check_interactive_front, chromium

STARTUP = 180  # s: four uvicorn workers each import MLflow, slow on a busy two-core machine


def processes() -> dict[int, tuple[int, int]]:
    """{pid: (parent pid, process group)} of every living process (zombies are not living)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        state, ppid, pgid = stat[stat.rindex(")") + 2 :].split()[:3]  # the name may hold spaces and ')'
        if state != "Z":
            found[int(entry.name)] = (int(ppid), int(pgid))
    return found


def descendants(pid: int) -> set[int]:
    procs, found, todo = processes(), set(), [pid]
    while todo:
        parent = todo.pop()
        children = {p for p, (ppid, _) in procs.items() if ppid == parent}
        found |= children
        todo += children
    return found


def store(folder: Path) -> tuple[str, MlflowTracker, str]:
    """A store with experiment 'ui' holding one search (parent run with front.html, one child)."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracker = MlflowTracker("ui", uri)
    parent = tracker.start_run("grid", {"moalign.kind": "search"})
    artifacts = folder / "artifacts"
    artifacts.mkdir()
    save_front_html(TABLE, ["good", "bad"], DIRS, SAMPLES, artifacts / "front.html", title="grid")
    tracker.log_artifacts(parent, artifacts)
    child = tracker.start_run("trained:1.0000,0.0000:s0", {"moalign.role": "trained"}, parent)
    tracker.log_params(child, {"weight/good": 1.0, "weight/bad": 0.0})
    tracker.log_metrics(child, [(0, {"eval/good": 0.5, "eval/bad": 0.02})])
    for run in (child, parent):
        tracker.end_run(run)
    return uri, tracker, parent


@pytest.fixture
def started():
    """The `moalign ui` processes a test started. Whatever of theirs is left at its end (a failed
    test) is killed: their process groups, and their descendants."""
    procs = []
    yield procs
    for proc in procs:
        groups = {pgid for pid, (_, pgid) in processes().items() if pid in descendants(proc.pid)}
        for pgid in groups | set(getattr(proc, "server_groups", ())) | {proc.pid}:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(30)


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_ui(folder: Path, uri: str, started: list, sigint_ignored: bool = False) -> tuple[subprocess.Popen, int, Path]:
    """`sigint_ignored`: started as `moalign ui &` in a script (or by some CI runners) is, with
    SIGINT ignored, which Python then leaves ignored unless moalign installs its own handler."""
    port = free_port()
    log = folder / f"ui-{port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:  # a file, not a pipe: a full pipe would stall the server's request log
        proc = subprocess.Popen([sys.executable, "-m", "moalign", "ui", "--port", str(port), "--tracking-uri", uri],
                                cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_ignore_sigint if sigint_ignored else None)
    started.append(proc)
    deadline = time.monotonic() + STARTUP
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            spawned = descendants(proc.pid)
            proc.server_groups = {pgid for pid, (_, pgid) in processes().items() if pid in spawned}
            return proc, port, log
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"moalign ui did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)


def stop_and_check(proc: subprocess.Popen, port: int, sig: int) -> int:
    """Send `sig` to moalign alone (as a terminal's Ctrl-C reaches only the foreground group, and the
    server's group is not it); afterwards no process it started is alive and the port is free."""
    spawned = descendants(proc.pid)
    assert len(spawned) >= 3, spawned  # mlflow, uvicorn and its workers
    assert proc.pid not in proc.server_groups  # the server runs in a group of its own
    proc.send_signal(sig)
    code = proc.wait(60)
    deadline = time.monotonic() + 5  # init reaps orphans asynchronously
    while time.monotonic() < deadline:
        alive = {pid for pid, (_, pgid) in processes().items() if pid in spawned or pgid in proc.server_groups}
        if not alive:
            break
        time.sleep(0.2)
    assert not alive, f"still running after {signal.Signals(sig).name}: {sorted(alive)}"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    return code


def test_ctrl_c_stops_every_process_and_the_ui_opens_on_runs_and_the_front(tmp_path, started):
    uri, tracker, parent = store(tmp_path)
    # MLflow 3.2-3.16 read this tag to open an experiment as "machine learning" (3.17: the link's workflowType)
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    proc, port, log = start_ui(tmp_path, uri, started, sigint_ignored=True)  # Ctrl-C still stops it
    try:
        link = f"http://127.0.0.1:{port}/#/experiments/{tracker.experiment_id}/runs?workflowType=machine_learning"
        assert f"  ui: {link}" in log.read_text().splitlines()
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        with chromium(tmp_path, height=1200) as driver:
            driver.get(link)
            # the runs table, with the search's parent run in it, not the traces overview
            WebDriverWait(driver, 90).until(lambda d: "grid" in d.find_element(By.TAG_NAME, "body").text)
            assert "/runs" in driver.current_url and "/overview" not in driver.current_url
            driver.get(f"http://127.0.0.1:{port}/#/experiments/{tracker.experiment_id}/runs/{parent}/artifacts/"
                       f"front.html?workflowType=machine_learning")
            frame = WebDriverWait(driver, 90).until(lambda d: d.find_element(By.CSS_SELECTOR, "iframe.mlflow-html-iframe"))
            driver.switch_to.frame(frame)
            assert check_interactive_front(driver, "weights: good 1, bad 0") == "t10a, t10b"
    finally:
        code = stop_and_check(proc, port, signal.SIGINT)
    assert code == 130


def test_sigterm_stops_every_process(tmp_path, started):
    uri, _, _ = store(tmp_path)
    proc, port, _ = start_ui(tmp_path, uri, started)
    assert stop_and_check(proc, port, signal.SIGTERM) == 143


def test_a_busy_port_is_one_line(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["ui", "--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot serve the MLflow UI on 127.0.0.1:{port}" in err


def test_ui_runs_mlflow_ui_on_the_project_store_in_a_group_of_its_own(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    experiment = MlflowTracker("quick", f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment()
    seen, real = {}, subprocess.Popen

    def instead_of_mlflow(cmd, **kwargs):  # a process that ends at once, started as the server would be
        seen.update(cmd=cmd, **kwargs)
        return real([sys.executable, "-c", "pass"], **kwargs)

    monkeypatch.setattr(subprocess, "Popen", instead_of_mlflow)
    port = free_port()
    assert main(["ui", "--port", str(port)]) == 0
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "mlflow", "ui"] and cmd[cmd.index("--port") + 1] == str(port)
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert seen["start_new_session"] and seen["env"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    out = capsys.readouterr().out
    assert f"  quick: http://127.0.0.1:{port}/#/experiments/{experiment}/runs?workflowType=machine_learning" in out
