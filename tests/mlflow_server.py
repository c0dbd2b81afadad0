"""Start a real `mlflow server` on 127.0.0.1 for a test, and stop it afterwards (or midway)."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A server with its SQLite store and artifacts in `folder`; `stop()` takes it away, e.g. mid-run."""

    def __init__(self, folder, timeout: float = 90.0):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(folder / "mlflow_server.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--artifacts-destination", str(folder / "artifacts")],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)  # a group: workers too
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=1)
                return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    log_text = (folder / "mlflow_server.log").read_text()[-2000:]
                    raise RuntimeError(f"mlflow server did not start: {log_text}") from None
                time.sleep(0.5)

    def stop(self) -> None:
        """Stop the server (its workers too) and wait until the port refuses connections."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(10)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                time.sleep(0.2)
            except OSError:
                return


@contextmanager
def mlflow_server(tmp_path, timeout: float = 90.0):
    """The URL of a running server; with `as url`, as the tracking URI."""
    server = MlflowServer(tmp_path, timeout)
    try:
        yield server.url
    finally:
        server.stop()
