"""Where a search's children run: here, one after another (`local`), or as Ray tasks, as many at
once as the cluster's resources allow (`ray`).

An executor is a callable `executor(calls) -> results`, in the order of `calls`: each call is a
picklable unit of work (a `functools.partial` of `moalign.pareto.children.run_train` / `run_eval`
over a `ChildContext`) that needs nothing from this process. The search's parent run stays here;
MLflow is the one shared record, so every worker must reach the same tracking store
(`check_shared_store`) and read the same checkpoints (`train.output_dir`).

A worker that dies mid-child (killed, out of memory, node lost) makes Ray run the same call again
(`ray.max_retries`): the call opens the search's children from MLflow, finds its own run unfinished
and resumes it from its last checkpoint, as a re-run search would; steps MLflow already has are not
logged twice.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from urllib.parse import urlparse

from moalign.errors import ConfigError, MoalignError
from moalign.pareto.config import RayConfig
from moalign.registry import objective_types, register_objective, registered_objectives


def _on_this_machine(uri: str) -> bool:
    """A SQLite file or a file store (`file:`, a path, a Windows drive); `databricks`, `http(s)://` are not.

    >>> [_on_this_machine(u) for u in ("sqlite:///m.db", "./mlruns", "C:/mlruns", "databricks", "https://mlflow:5000")]
    [True, True, True, False, False]
    """
    scheme = urlparse(uri).scheme
    return scheme in ("sqlite", "file") or len(scheme) == 1 or (not scheme and ("/" in uri or "\\" in uri or uri.startswith(".")))


def make_executor(config):
    """The executor a `SearchConfig` asks for; None for `local`: the search then runs each call in
    its own process, in order, sharing its open store (`moalign.pareto.search.serial`)."""
    if config.executor == "local":
        return None
    return RayExecutor(config.ray, _objective_types(config.train))


def _objective_types(train) -> set[str]:
    """The registered names the training config builds objectives from: reward, eval and constrained."""
    from moalign.scalarization import parse_constraint

    names = {parse_constraint(c).objective for c in train.reward.constraints}
    return names | objective_types(train.reward.objectives) | objective_types(train.eval_objectives or {})


def check_ray_address(config, timeout: float = 3.0) -> None:
    """A cluster address that cannot work, refused in one line before any run exists: a `ray://`
    address without the `ray[client]` extra (grpcio), or a host:port where nothing listens (Ray
    itself retries such an address for minutes, printing a line every few seconds)."""
    import importlib.util
    import socket

    address = config.ray.address
    if config.executor != "ray" or not address or address == "auto":
        return
    client = address.startswith("ray://")
    if client and importlib.util.find_spec("grpc") is None:
        raise ConfigError(f"ray.address {address!r}: a ray:// address needs Ray's client: pip install 'ray[client]'")
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    try:
        host, port = parsed.hostname, parsed.port or (10001 if client else 6379)
    except ValueError:
        raise ConfigError(f"ray.address {address!r}: expected host:port, ray://host:port or auto") from None
    if not host:
        raise ConfigError(f"ray.address {address!r}: expected host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"ray.address {address!r}: nothing answers at {host}:{port} ({reason}); start the cluster "
                          f"(ray start --head) or fix the address") from None


def check_shared_store(config) -> None:
    """Refuse, before anything runs, what other nodes of a Ray cluster could not reach: a tracking
    store on this machine's disk, checkpoints under a relative path. A local cluster (no address)
    runs on this machine and may use both."""
    if config.executor != "ray" or not config.ray.address:
        return
    train = config.train
    if train.tracking.enabled:
        from moalign.tracking import resolve_tracking_uri

        uri = resolve_tracking_uri(train.tracking.tracking_uri)
        if _on_this_machine(uri):
            raise ConfigError(f"train.tracking.tracking_uri: {uri} is a store on this machine, which the nodes of the "
                              f"Ray cluster at {config.ray.address} cannot reach: use an MLflow server (http://host:port)")
    if not Path(train.output_dir).is_absolute():
        raise ConfigError(f"train.output_dir: {train.output_dir!r} is relative; with ray.address every node must read "
                          f"the checkpoints and adapters: give an absolute path on storage all nodes share")


def _in_dir(cwd: str, call, objectives: dict | None = None):
    """Run `call` from the search's working directory where this node has it (a local cluster), so
    relative paths (output_dir, data) mean what they mean to the search, with the objectives the
    search uses that its process registered in-process (a notebook's class, say) registered here
    too. Ray pickles a class by value where it has no importable module (`__main__`, a notebook, a
    function's local class); one from an importable module is pickled by reference, so that module
    must be installed on the workers."""
    for name, cls in (objectives or {}).items():
        register_objective(name, cls)
    here = os.getcwd()
    if os.path.isdir(cwd):
        os.chdir(cwd)
    try:
        return call()
    finally:
        os.chdir(here)


def _one_child_each(calls: list) -> tuple[list, list[tuple[int, int]]]:
    """A run_eval call over a group of units becomes one call per unit: each child its own task,
    free to run on its own node (a group shares a model load only inside one process)."""
    from moalign.pareto.children import run_eval

    out, spans = [], []
    for call in calls:
        start = len(out)
        if isinstance(call, functools.partial) and call.func is run_eval and len(call.args) == 2 and len(call.args[1]) > 1:
            ctx, units = call.args
            out += [functools.partial(run_eval, ctx, [unit], **call.keywords) for unit in units]
            spans.append((start, -len(units)))  # negative: a group, its results joined into one list
        else:
            out.append(call)
            spans.append((start, 1))
    return out, spans


def _regroup(results: list, spans: list[tuple[int, int]]) -> list:
    """The results of `_one_child_each`'s calls as the original calls' results: a split group's
    one-unit lists joined back into the group's list."""
    return [results[start] if n == 1 else [results[start + i][0] for i in range(-n)] for start, n in spans]


class RayExecutor:
    """Each child a Ray task with `num_cpus`/`num_gpus`, retried `max_retries` times if its worker dies."""

    def __init__(self, config: RayConfig, objective_types: set[str] = frozenset()):
        self.config = config
        self.objective_types = set(objective_types)

    def _connect(self):
        import ray

        if not ray.is_initialized():  # a cluster the caller connected to is used as it is
            try:
                ray.init(address=self.config.address, log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.config.address or "a local cluster"
                raise MoalignError(f"ray.address: cannot connect to {where}: {str(exc).splitlines()[0]}") from None
        return ray

    def __call__(self, calls: list) -> list:
        ray = self._connect()
        task = ray.remote(num_cpus=self.config.num_cpus, num_gpus=self.config.num_gpus,
                          max_retries=self.config.max_retries, retry_exceptions=False)(_in_dir)
        flat, spans = _one_child_each(calls)
        # only those the search uses: a class registered from a module the workers cannot import
        # would fail every task's unpickling, whether or not the search scores with it
        used = {n: c for n, c in registered_objectives().items() if n in self.objective_types}
        objectives = ray.put(used)  # once, not once per child
        refs = [task.remote(os.getcwd(), call, objectives) for call in flat]
        return _regroup(self._gather(ray, refs), spans)

    @staticmethod
    def _gather(ray, refs: list) -> list:
        """Results in order; on the first failure (or Ctrl-C) the other children are cancelled,
        which interrupts them as Ctrl-C would (they checkpoint and end KILLED), then it is raised."""
        from ray.exceptions import RayError, RayTaskError

        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                ray.get(ready[0])  # raises the child's failure now, not after the slowest child
        except BaseException as exc:
            for ref in pending:
                ray.cancel(ref)
            if pending:
                ray.wait(pending, num_returns=len(pending), timeout=60)  # let them mark their runs
            if isinstance(exc, RayTaskError) and isinstance(exc.cause, BaseException):
                raise exc.cause from None  # the child's own error (a MoalignError is one line)
            if isinstance(exc, RayError):
                raise MoalignError(f"a child of the search failed on Ray: {str(exc).strip().splitlines()[0]}") from None
            raise
        return ray.get(refs)
