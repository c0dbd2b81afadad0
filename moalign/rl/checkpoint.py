"""Checkpoints that resume a run exactly: adapter, optimizer, scheduler, RNG and trainer state.

Each save replaces the previous one atomically (write beside, then rename), so an interrupt
during a save leaves the last good checkpoint in place.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from moalign.errors import MoalignError


def save_checkpoint(directory: Path, policy, optimizer, scheduler, step: int, trainer_state: dict) -> Path:
    directory = Path(directory)
    tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save(tmp / "adapter")
    torch.save({
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        "trainer": trainer_state,
    }, tmp / "state.pt")
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def load_checkpoint_state(directory: Path) -> dict:
    state_file = Path(directory) / "state.pt"
    if not state_file.is_file():
        raise MoalignError(f"no checkpoint at {directory}")
    return torch.load(state_file, map_location="cpu", weights_only=False)


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
