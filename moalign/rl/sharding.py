"""Sharded data parallel (FSDP2): each process holds 1/N of the weights, gathered layer by layer.

`accelerate launch --use_fsdp --fsdp_version 2 ...` (or an accelerate config file with
`distributed_type: FSDP`, `fsdp_version: 2`) turns it on; the run is otherwise the data-parallel run
of `moalign.rl.distributed` (prompt groups shared out, global batch statistics, summed gradients),
so a sharded step equals the one-process step on the same global batch. What changes:

- each process loads the model on the CPU (in the dtype `model.dtype` gives on the device) and the
  FSDP units move to the device one at a time, cut into shards there, so no device holds more than
  its shards and one whole unit (full fine-tuning's frozen reference is sharded too);
- the model is cut into FSDP units (by default one per transformer block, the model's
  `_no_split_modules`; accelerate's `fsdp_auto_wrap_policy` and `fsdp_transformer_layer_cls_to_wrap`
  override it; `NO_WRAP` leaves the blocks in the root unit) and every forward all-gathers a
  unit's weights just before it runs. Every process must therefore run the same forwards: generation runs with `synced_gpus`
  (a process that has finished keeps stepping until all have), completions are padded to the longest
  across processes, prompts to at least 2 tokens, and the final evaluation's generation runs on
  every process (only the main one scores). `generate` enters below the peft wrapper, so the root
  unit is gathered around it (`root_gathered`);
- gradients are reduce-scattered as sums (divide factor 1), the sums the data-parallel path
  all-reduces by hand;
- checkpoints and the saved adapter hold full tensors, gathered on every process and written by the
  main one; they resume only under an FSDP launch (`check_resumable`). A Ctrl-C does not checkpoint
  (every process would have to gather at once, and each stopped at its own point): the run resumes
  from its last checkpoint.

Why torch's `fully_shard` rather than `Accelerator.prepare`: accelerate switches FSDP on only for
GPU-type backends (a CPU launch would silently run plain data parallel, and so could not be tested
here), and its `prepare` wraps the optimizer and scheduler (stepping the scheduler once per process).
moalign reads the same accelerate plugin (`FullyShardedDataParallelPlugin`: wrap policy,
`reshard_after_forward`; `--mixed_precision bf16` with gradients summed in fp32) and applies it as
accelerate's `fsdp2_prepare_model` does, so one code path runs on gloo and NCCL. CPU offload,
activation checkpointing, fp16/fp8 and DeepSpeed are refused in one line; `cpu_ram_efficient_loading`
is not applied (every process loads the model on the CPU).
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from moalign.errors import ConfigError, MoalignError


def fsdp_requested() -> bool:
    """Whether the launcher's accelerate config asks for FSDP (and which version, checked)."""
    from accelerate.utils import parse_flag_from_env

    if not parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return False
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise ConfigError(f"accelerate config: fsdp_version {version} is not supported by moalign train; set "
                          f"fsdp_version: 2 (accelerate launch --use_fsdp --fsdp_version 2)")
    if parse_flag_from_env("FSDP_OFFLOAD_PARAMS"):
        raise ConfigError("accelerate config: fsdp_offload_params is not supported by moalign train (generation "
                          "would run on the offloaded CPU weights); turn it off")
    if parse_flag_from_env("FSDP_ACTIVATION_CHECKPOINTING"):
        raise ConfigError("accelerate config: fsdp_activation_checkpointing is not supported by moalign train; "
                          "turn it off")
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if precision not in ("no", "bf16"):
        raise ConfigError(f"accelerate config: mixed_precision {precision} is not supported with FSDP by moalign "
                          f"train; use bf16 or no")
    try:  # what shard_module uses, by version: torch 2.8's force-sum reduction, accelerate 1.6's FSDP2 helpers
        from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy  # noqa: F401
        from torch.distributed.fsdp import FSDPModule

        FSDPModule.set_force_sum_reduction_for_comms  # noqa: B018
    except (ImportError, AttributeError):
        raise ConfigError("accelerate config: FSDP2 in moalign train needs torch >= 2.8 and accelerate >= 1.6") from None
    return True


def shard_module(model: torch.nn.Module, frozen: bool = False) -> torch.nn.Module:
    """Apply FSDP2 to `model` in place, as accelerate's plugin (from the launch environment) says.

    `frozen`: a model that only runs forwards (full fine-tuning's reference): every unit reshards
    after its forward, since no backward would."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy, get_module_children_bottom_up
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    plugin = FullyShardedDataParallelPlugin()
    if plugin.auto_wrap_policy is None and "FSDP_AUTO_WRAP_POLICY" not in os.environ:
        plugin.auto_wrap_policy = transformer_auto_wrap_policy  # the default: one unit per transformer block
    plugin.set_auto_wrap_policy(model)
    wrap = fsdp2_prepare_auto_wrap_policy(plugin, model)
    # --mixed_precision bf16: weights gathered and computed in bf16, gradients summed in fp32
    bf16 = os.environ.get("ACCELERATE_MIXED_PRECISION", "no") == "bf16"
    kwargs = dict(reshard_after_forward=plugin.reshard_after_forward or frozen,
                  mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
                  else MixedPrecisionPolicy())
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model  # the transformers model under peft
    skip = (FSDPModule, torch.nn.ModuleList, torch.nn.ModuleDict)  # containers have no forward: fully_shard refuses them
    for module in get_module_children_bottom_up(hf)[:-1]:
        if wrap is not None and wrap(module) and not isinstance(module, skip):
            fully_shard(module, **kwargs)
    # Embeddings, final norm and head get units of their own, carved as accelerate's
    # fsdp2_prepare_model carves them (tied weights in one unit; the tail stays gathered between the
    # forward and the backward that follows it).
    embed, head = hf.get_input_embeddings(), hf.get_output_embeddings()
    tied = embed is not None and head is not None and embed.weight is head.weight
    if embed is not None and not tied:
        fully_shard(embed, **kwargs)
    tail = [m for m in ((_final_norm(hf), embed, head) if tied else (_final_norm(hf), head)) if m is not None]
    if tail:
        fully_shard(tail, **{**kwargs, "reshard_after_forward": frozen})
    # The root's resharding left to torch (kept gathered: its weights are needed first in the backward), as accelerate does.
    root = kwargs if frozen else {k: v for k, v in kwargs.items() if k != "reshard_after_forward"}
    fully_shard(model, **root)
    for module in model.modules():
        if isinstance(module, FSDPModule):  # gradients summed, as the data-parallel path sums them
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # a plain sum (gloo has no pre-multiplied one)
    # FSDP picks its root at the first forward; `generate` starts below the peft wrapper, so one
    # forward through the root first, on every process.
    with torch.no_grad():
        model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=_device(model)))
    for module in model.modules():  # sharded again: the optimizer must be built on the sharded parameters
        if isinstance(module, FSDPModule):
            module.reshard()
    return model


def _final_norm(hf):
    """The norm before the head: the last `*Norm` child of the transformers model's body (as
    accelerate's private `_find_final_norm` finds it, which is no API to import)."""
    body = getattr(hf, getattr(hf, "base_model_prefix", ""), hf)
    return next((m for _, m in reversed(list(body.named_children())) if "Norm" in type(m).__name__), None)


def _device(model):
    """The device a sharded model computes on (where its shards are)."""
    return next(model.parameters()).to_local().device


def shard_policy(policy, device: str) -> None:
    """Shard the policy (and a full fine-tuning run's frozen reference) across the processes; the
    units move to `device` one at a time (the policy was loaded on the CPU, so no device holds it whole).

    The trainable parameters are recorded as sharded: a unit that stays gathered between forwards
    registers its gathered copies on the module, and peft's `disable_adapter` (the reference pass)
    switches `requires_grad` on whatever is registered (`Policy.trainable`)."""
    shard_module(policy.model)
    if policy.reference is not None:
        shard_module(policy.reference, frozen=True)
    policy.trainable = {name: p for name, p in policy.model.named_parameters() if p.requires_grad}
    policy.device = device


@contextmanager
def root_gathered(model):
    """Around `generate` on a sharded model: its root unit's weights gathered (a model can keep weights
    outside the block, embedding and head units, e.g. GPT-2's position embeddings, and `generate`
    never runs the root's own forward); nothing for any other model."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def full(tensor):
    """A sharded tensor (DTensor) gathered whole; any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_model_state(policy) -> dict:
    """What `Policy.save` writes, gathered whole for the main process, which writes it (collective:
    every process calls it).

    LoRA gathers only the trainable adapter tensors (the frozen base is the named model's); full
    fine-tuning gathers the whole state dict (the other processes receive an empty one)."""
    if policy.config.lora:
        return {name: full(p.detach()).cpu() for name, p in policy.trainable.items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(policy.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(policy, optimizer) -> dict:
    """The optimizer's state keyed by parameter name, whole on the main process (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(policy.model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def check_resumable(state: dict, sharded: bool, where) -> None:
    """One line when a checkpoint's optimizer state was written under the other kind of launch: a
    sharded run keys it by parameter name, a plain one by position."""
    by_name = any(isinstance(p, str) for group in state.get("param_groups", []) for p in group.get("params", []))
    if by_name != sharded:
        written, now = ("an FSDP", "without FSDP") if by_name else ("a non-FSDP", "with FSDP")
        raise MoalignError(f"checkpoint {where} was written by {written} launch and cannot resume {now}; "
                           f"resume it under the launch that wrote it")


def load_optimizer_state(policy, optimizer, state: dict) -> None:
    """Shard a checkpoint's full optimizer state back onto this process (every process reads the file)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(policy.model, optimizer, state, options=StateDictOptions(full_state_dict=True))
