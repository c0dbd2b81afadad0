"""Checkpoints that resume a run exactly: adapter, optimizer, scheduler, RNG and trainer state.

Layout: `checkpoint/step-<k>/` holds `adapter/`, `state.pt` (tensors: optimizer, scheduler, torch
RNG) and `trainer.json` (history, reward normaliser, baselines, numpy/python RNG). A step folder is
written under a temporary name and renamed when complete, and older steps are deleted only after
that, so at every moment (kill -9 included) the newest `step-*` folder is a whole checkpoint.

Data never executes code: `state.pt` is read with `torch.load(weights_only=True)` (plain tensors
and containers; a path read from an MLflow tag can point anywhere) and the rest is JSON.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from moalign.errors import MoalignError

_STEP = re.compile(r"^step-(\d+)$")


def _steps(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP.match(p.name)) and p.is_dir()]
    return sorted(found)


def _remove_stale(directory: Path, keep: Path | None = None) -> None:
    """Drop temporary folders of interrupted saves and every step folder but `keep`."""
    for path in directory.iterdir() if directory.is_dir() else ():
        if path != keep and (".tmp" in path.name or _STEP.match(path.name)):
            shutil.rmtree(path, ignore_errors=True)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete step folder under `directory`, or None if the run has none yet."""
    steps = _steps(Path(directory))
    return steps[-1][1] if steps else None


def save_checkpoint(directory: str | Path, policy, optimizer, scheduler, step: int, trainer_state: dict,
                    model_state: dict | None = None, optimizer_state: dict | None = None) -> Path:
    """Write step `step`'s checkpoint beside the current one, then retire the older ones.

    `model_state`/`optimizer_state`: a sharded run's states, gathered whole (`moalign.rl.sharding`)."""
    directory = Path(directory)
    final = directory / f"step-{step:07d}"
    tmp = directory / f".step-{step:07d}.tmp{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        policy.save(tmp / "adapter", model_state)
        optimizer_state = optimizer.state_dict() if optimizer_state is None else optimizer_state
        torch.save({"step": step, "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp / "state.pt")
        numpy_rng = np.random.get_state()
        trainer = {"step": step, "trainer": trainer_state,
                   "rng": {"numpy": [numpy_rng[0], numpy_rng[1].tolist(), *numpy_rng[2:]],
                           "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}}
        (tmp / "trainer.json").write_text(json.dumps(trainer), encoding="utf-8")
    except (OSError, RuntimeError) as exc:  # disk full, quota, a folder gone (torch.save raises RuntimeError)
        shutil.rmtree(tmp, ignore_errors=True)
        intact = latest_checkpoint(directory)
        kept = f"the checkpoint at step {int(intact.name.split('-')[1])} ({intact}) is intact" if intact else \
            "there is no earlier checkpoint: the run restarts from step 0"
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200]
        raise MoalignError(f"could not write the checkpoint of step {step} under {directory} ({reason}); {kept}; "
                           f"free space, then resume") from None
    shutil.rmtree(final, ignore_errors=True)  # a re-save of the same step (resume after an interrupt)
    os.replace(tmp, final)
    _remove_stale(directory, keep=final)
    return final


def load_checkpoint_state(directory: str | Path) -> dict | None:
    """{step, optimizer, scheduler, torch_rng, trainer, rng, adapter_dir} of the newest checkpoint, or
    None when there is none (a run interrupted before its first checkpoint starts afresh)."""
    path = latest_checkpoint(directory)
    if path is None:
        return None
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        state.update(json.loads((path / "trainer.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as exc:  # JSONDecodeError is a ValueError
        raise MoalignError(f"checkpoint {path} is unreadable: {exc}".splitlines()[0]) from None
    state["adapter_dir"] = str(path / "adapter")
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch_rng"])
    kind, keys, pos, has_gauss, gauss = state["rng"]["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["rng"]["python"]
    random.setstate((version, tuple(internal), gauss_next))
