"""One training run over several processes (data parallel), a thin layer over accelerate.

`accelerate launch --multi_gpu --num_processes N -m moalign train ...` (or `torchrun`) starts N
copies of the same run. Each takes a contiguous share of the step's prompt groups (a group never
splits: `prompts_per_step` must divide by N), generates and scores it, and the rest of the step is
made to equal the one-process step on the whole batch:

- every process receives every completion and score (`gather`), so the reward's statistics (running
  mean/std, ideal point, Lagrange multipliers), the advantages' baselines and the logged metrics are
  those of the global batch, identical on all processes;
- the loss of a share is its token sum over the *global* token count (`sum`), and gradients are
  summed (`sum_gradients`): together they are the gradient of the one-process token mean, exactly,
  so every process takes the same optimizer step and the adapters stay identical;
- only the main process logs to MLflow, writes checkpoints, saves and evaluates the adapter; every
  process loads the checkpoint on resume.

Gradients are summed by hand (one all-reduce of the flattened trainable parameters' gradients per
optimizer step) rather than by wrapping the model in DDP: the step runs several forwards per backward
(a shared prompt then its completions) and samples from the bare model, which a DDP wrapper does
not allow, and LoRA gradients are small enough that overlapping their reduction with the backward
gains nothing. With accelerate's FSDP config (`fsdp_version: 2`) the weights are also sharded
(`moalign.rl.sharding`): FSDP then sums the gradients itself. DeepSpeed is refused with one line.

With one process every method returns its input and nothing touches torch.distributed, so a
single-process run is bit-for-bit what it was.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from moalign.errors import ConfigError, MoalignError
from moalign.objective import Batch, Objective
from moalign.rl.sharding import fsdp_requested

# Where launchers put the number of processes: torchrun / accelerate launch, then MPI implementations.
_WORLD_SIZE_VARIABLES = ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]


def launched_world_size() -> int:
    """How many processes the launcher started (1 without one), read before any process group exists."""
    from accelerate.utils import get_int_from_env

    return get_int_from_env(_WORLD_SIZE_VARIABLES, 1)


def launched_rank() -> int:
    """This process's rank as the launcher numbered it (0 without one), before any process group exists."""
    from accelerate.utils import get_int_from_env

    return get_int_from_env(["RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"], 0)


def check_world_size(config, world_size: int | None = None) -> None:
    """One line when the step's prompt groups cannot be shared evenly, or accelerate asks for a mode
    this trainer does not run (see the module docstring)."""
    from accelerate.utils import parse_flag_from_env

    world_size = launched_world_size() if world_size is None else world_size
    if world_size == 1:
        return
    if config.supervised.enabled:
        raise ConfigError("supervised.enabled: supervised fine-tuning runs in one process; start it without "
                          "torchrun or accelerate launch")
    if parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        raise ConfigError("accelerate config: DeepSpeed is not supported by moalign train; to shard the weights use "
                          "FSDP2 (accelerate launch --use_fsdp --fsdp_version 2)")
    fsdp_requested()  # a version this trainer does not run fails here
    per_step = config.sampling.prompts_per_step
    if per_step % world_size:
        raise ConfigError(f"sampling.prompts_per_step ({per_step}) must be divisible by the number of processes "
                          f"({world_size}): each process takes whole prompt groups")


class Processes:
    """This process's place in the run, and the few collectives the trainer needs.

    `Processes()` is the single process; `Processes.launched(config)` joins the launcher's process
    group when there is one.
    """

    def __init__(self, state=None, sharded: bool = False):
        self.state = state  # accelerate's PartialState; None in a single process
        self.sharded = sharded  # FSDP2: weights sharded, gradients summed by FSDP (moalign.rl.sharding)
        self.rank = state.process_index if state else 0
        self.world_size = state.num_processes if state else 1
        # None: the policy picks its default. accelerate numbers CPU devices by rank ("cpu:1"), which
        # torch.load's map_location does not take.
        self.device = ("cpu" if state.device.type == "cpu" else str(state.device)) if state else None

    @classmethod
    def launched(cls, config) -> Processes:
        check_world_size(config)
        if launched_world_size() == 1:
            return cls()
        from accelerate import PartialState

        # accelerate only takes a CPU-only machine for a multi-process one when told (gloo backend)
        state = PartialState(cpu=not torch.cuda.is_available())
        if state.num_processes != launched_world_size():  # a state this process built before the launch env was set
            raise MoalignError(f"accelerate's state in this process has {state.num_processes} process(es), the launcher "
                               f"{launched_world_size()}: start the run in a fresh process (torchrun / accelerate launch)")
        return cls(state, sharded=fsdp_requested())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This process's contiguous share of `n` items (`n` divides by the world size).

        >>> Processes().shard(8)
        slice(0, 8, None)
        """
        size = n // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    def seed(self, seed: int) -> int:
        """A sampling seed of this process's own (rank 0 keeps `seed`), so shares draw independently."""
        if self.rank == 0:
            return seed
        return int(hashlib.sha256(f"{seed}:rank{self.rank}".encode()).hexdigest()[:8], 16)

    def gather(self, items: list) -> list:
        """Every process's `items`, concatenated in rank order, on every process."""
        if self.world_size == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(list(items))

    def sum(self, value):
        """`value` (a number or tensor) summed over processes."""
        if self.world_size == 1:
            return value
        from accelerate.utils import reduce

        tensor = torch.as_tensor(value, dtype=torch.float64 if not torch.is_tensor(value) else value.dtype,
                                 device=self.device)
        total = reduce(tensor.clone(), "sum")
        return total if torch.is_tensor(value) else float(total)

    def sum_floats(self, values: dict) -> dict:
        """Each number of `values` summed over processes, in one all-reduce."""
        if self.world_size == 1:
            return values
        totals = self.sum(torch.tensor([float(v) for v in values.values()], dtype=torch.float64, device=self.device))
        return dict(zip(values, totals.tolist()))

    def max(self, value: int) -> int:
        """The largest of the processes' `value`s."""
        return value if self.world_size == 1 else max(self.gather([value]))

    def sum_gradients(self, parameters: list) -> None:
        """Replace each gradient by its sum over processes (one flattened all-reduce); under FSDP the
        backward has already reduce-scattered the sums."""
        if self.world_size == 1 or self.sharded:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        total = self.sum(torch.cat([g.reshape(-1) for g in grads]))
        for p, part in zip(parameters, total.split([g.numel() for g in grads])):
            p.grad = part.view_as(p).to(p.dtype)

    def broadcast(self, value):
        """The main process's `value` (any picklable object), on every process."""
        if self.world_size == 1:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value], from_process=0)[0]

    def broadcast_parameters(self, parameters: list) -> None:
        """Start every process from the main process's weights (LoRA's random init is per process)."""
        if self.world_size == 1:
            return
        if self.sharded:  # still on the CPU, which NCCL cannot send from: sent as one object (adapters are small)
            for p, value in zip(parameters, self.broadcast([p.data for p in parameters])):
                p.data.copy_(value)
            return
        from accelerate.utils import broadcast

        for p in parameters:
            p.data.copy_(broadcast(p.data.clone(), from_process=0))


def _rows(batch: Batch, part: slice) -> Batch:
    return Batch(prompts=batch.prompts[part], completions=batch.completions[part],
                 references=None if batch.references is None else batch.references[part],
                 sources=None if batch.sources is None else batch.sources[part], groups=batch.groups[part])


class SharedScoring(Objective):
    """An objective scored across processes: each scores its own share of the global batch and
    every process receives all the scores. Shares are whole prompt groups, so group-wise
    objectives see their groups whole."""

    def __init__(self, objective: Objective, processes: Processes):
        self.objective, self.processes = objective, processes
        self.name, self.bounds, self.requires = objective.name, objective.bounds, objective.requires
        self.direction, self.is_group = objective.direction, objective.is_group

    def check_fields(self, batch: Batch) -> None:
        self.objective.check_fields(batch)

    def score(self, batch: Batch) -> np.ndarray:
        mine = self.objective.score(_rows(batch, self.processes.shard(len(batch))))
        return np.asarray(self.processes.gather(mine.tolist()), dtype=np.float64)


def share_scoring(reward_fn, processes: Processes) -> None:
    """Score `reward_fn`'s objectives across processes: it is then called on the global batch on
    every process, so its running statistics update identically everywhere from the whole batch,
    while each process scores only its share."""
    if processes.world_size == 1:
        return
    for objectives in (reward_fn.objectives, reward_fn.constraint_only):
        for column, objective in objectives.items():
            objectives[column] = SharedScoring(objective, processes)
