"""Sharded data parallel (FSDP2): each process holds 1/N of the weights, gathered layer by layer.

`accelerate launch --use_fsdp --fsdp_version 2 ...` (or an accelerate config file with
`distributed_type: FSDP`, `fsdp_version: 2`) turns it on; the run is otherwise the data-parallel run
of `moalign.rl.distributed` (prompt groups shared out, global batch statistics, summed gradients),
so a sharded step equals the one-process step on the same global batch. What changes:

- the model is cut into FSDP units (by default one per transformer block, the model's
  `_no_split_modules`; accelerate's `fsdp_auto_wrap_policy` and `fsdp_transformer_layer_cls_to_wrap`
  override it) and every forward all-gathers a unit's weights just before it runs. Every process must
  therefore run the same number of forwards: generation runs with `synced_gpus` (a process that has
  finished keeps stepping until all have), and the final evaluation's generation runs on every process;
- gradients arrive reduce-scattered and averaged over the N processes, so each share's loss is scaled
  by N (`Processes.loss_scale`) to make them the sum the data-parallel path all-reduces by hand (a
  divide factor of 1 would say it directly, but gloo has no pre-multiplied sum);
- checkpoints and the saved adapter hold full tensors, gathered on every process and written by the
  main one, so they read the same as a one-process run's (resume under the same launch).

Why torch's `fully_shard` rather than `Accelerator.prepare`: accelerate switches FSDP on only for
GPU-type backends (a CPU launch would silently run plain data parallel, and so could not be tested
here), and its `prepare` wraps the optimizer and scheduler (stepping the scheduler once per process).
moalign reads the same accelerate plugin (`FullyShardedDataParallelPlugin`: wrap policy,
`reshard_after_forward`, CPU offload, mixed precision) and applies it as accelerate's
`fsdp2_prepare_model` does, so one code path runs on gloo and NCCL. DeepSpeed is not on this path.
"""
from __future__ import annotations

import os

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
    return True


def shard_module(model: torch.nn.Module) -> torch.nn.Module:
    """Apply FSDP2 to `model` in place, as accelerate's plugin (from the launch environment) says."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy, get_module_children_bottom_up
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    plugin = FullyShardedDataParallelPlugin()
    if plugin.auto_wrap_policy is None:  # one unit for the whole model would gather it all at once
        plugin.auto_wrap_policy = transformer_auto_wrap_policy
    plugin.set_auto_wrap_policy(model)
    wrap = fsdp2_prepare_auto_wrap_policy(plugin, model)
    kwargs = dict(reshard_after_forward=plugin.reshard_after_forward, offload_policy=plugin.cpu_offload,
                  mp_policy=plugin.mixed_precision_policy or MixedPrecisionPolicy())
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model  # the transformers model under peft
    for module in get_module_children_bottom_up(hf)[:-1]:
        if wrap is not None and wrap(module) and not isinstance(module, FSDPModule):
            fully_shard(module, **kwargs)
    # `generate` runs the transformers model, not the peft wrapper around it, so the root unit's
    # gathering never fires there: embeddings, final norm and head get units of their own, carved as
    # accelerate's fsdp2_prepare_model carves them (tied weights in one unit, the tail kept gathered).
    embed, head = hf.get_input_embeddings(), hf.get_output_embeddings()
    tied = embed is not None and head is not None and embed.weight is head.weight
    body = getattr(hf, getattr(hf, "base_model_prefix", ""), hf)
    norm = next((m for _, m in reversed(list(body.named_children())) if "Norm" in type(m).__name__), None)
    if embed is not None and not tied:
        fully_shard(embed, **kwargs)
    tail = [m for m in ((norm, embed, head) if tied else (norm, head)) if m is not None]
    if tail:
        fully_shard(tail, **{**kwargs, "reshard_after_forward": False})
    fully_shard(model, **kwargs)
    return model


def shard_policy(policy) -> None:
    """Shard the policy (and a full fine-tuning run's frozen reference) across the processes."""
    shard_module(policy.model)
    if policy.reference is not None:
        shard_module(policy.reference)


def full(tensor):
    """A sharded tensor (DTensor) gathered whole; any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_model_state(policy) -> dict:
    """What `Policy.save` writes, gathered whole on every process (collective: every process calls it).

    LoRA gathers only the trainable adapter tensors (the frozen base is the named model's); full
    fine-tuning gathers the whole state dict."""
    if policy.config.lora:
        return {name: full(p.detach()).cpu() for name, p in policy.model.named_parameters() if p.requires_grad}
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
