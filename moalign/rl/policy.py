"""The trainable policy and its frozen reference.

With LoRA (the default) the reference is the same network with adapters disabled, so only one
copy of the weights is in memory. Full fine-tuning keeps a frozen copy instead.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from moalign.errors import ConfigError
from moalign.models import default_device, load_causal_lm, load_tokenizer
from moalign.rl.config import ModelConfig


@contextmanager
def peft_wrapping():
    """Around peft's model wrapping: peft 0.21 reads transformers 5's deprecated
    `is_gradient_checkpointing` inside `PeftModel.__init__`, a FutureWarning at every load that is
    neither our call nor ours to fix; only that one message is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def without_dropout(model) -> None:
    """Every dropout of `model` set to 0: `nn.Dropout` modules and the attention dropout rate that
    transformers' attention modules read from an attribute (Llama's kind; TRL's `disable_dropout_in_model`,
    a dev-only dependency here, resets only the modules)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


class Policy:
    def __init__(self, config: ModelConfig, device: str | None = None, adapter_dir: str | None = None,
                 max_new_tokens: int | None = None):
        self.config = config
        self.device = device or default_device()
        if adapter_dir is None and config.init_adapter:  # a warm start; a resumed run continues its own
            adapter_dir = config.init_adapter
            if not Path(adapter_dir).is_dir():
                raise ConfigError(f"model.init_adapter: {adapter_dir} is not a directory")
        self.tokenizer = load_tokenizer(config.name, trust_remote_code=config.trust_remote_code)
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        base = load_causal_lm(config.name, config.dtype, self.device, config.trust_remote_code, config.attn_implementation)
        if max_new_tokens is not None:  # before any run exists: a generation past the context never ends well
            from moalign.models import check_context

            check_context(base.config, max_new_tokens)
        base.generation_config.pad_token_id = self.tokenizer.pad_token_id
        if config.disable_dropout:  # before LoRA wraps it, so lora_dropout stays as configured
            without_dropout(base)
        self.reference = None
        self.trainable = None  # name -> parameter, recorded when the model is sharded (moalign.rl.sharding)
        if config.lora:
            from peft import LoraConfig, PeftModel, get_peft_model

            if adapter_dir:
                with peft_wrapping():
                    self.model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
            else:
                from transformers.pytorch_utils import Conv1D

                # GPT-2-style Conv1D layers store their weights transposed; peft needs to be told (it warns otherwise)
                transposed = any(isinstance(m, Conv1D) for m in base.modules())
                lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                  target_modules=config.lora_target_modules, task_type="CAUSAL_LM",
                                  fan_in_fan_out=transposed)
                try:
                    with peft_wrapping():
                        self.model = get_peft_model(base, lora)
                except ValueError as exc:  # peft's message lists the modules it could not find
                    raise ConfigError(f"model.lora_target_modules: {exc}".splitlines()[0]) from None
        else:
            self.model = base
            if adapter_dir:
                self.model.load_state_dict(torch.load(Path(adapter_dir) / "model.pt", map_location=self.device,
                                                      weights_only=True))
            self.reference = load_causal_lm(config.name, config.dtype, self.device, config.trust_remote_code,
                                            config.attn_implementation).eval()
            self.reference.requires_grad_(False)

    def parameters(self):
        if self.trainable is not None:
            return list(self.trainable.values())
        return [p for p in self.model.parameters() if p.requires_grad]

    @contextmanager
    def as_reference(self):
        """The reference network: adapters disabled (LoRA) or the frozen copy."""
        if self.reference is not None:
            yield self.reference
        else:
            with self.model.disable_adapter():
                yield self.model
            for p in (self.trainable or {}).values():  # peft re-enabled what was registered: maybe gathered copies
                p.requires_grad_(True)

    def save(self, directory: str | Path, state_dict: dict | None = None) -> None:
        """`state_dict`: the weights to write instead of the model's own (a sharded run's, gathered whole)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.config.lora:
            # save_embedding_layers=False: LoRA on linear layers changes no embedding, and peft's "auto" looks the
            # base model's name up (on the hub, if it is no folder) to find out, warning when it cannot
            self.model.save_pretrained(directory, save_embedding_layers=False,
                                       **({} if state_dict is None else {"state_dict": state_dict}))
            # The base model by the name it was given (hub id, local path, or the bundled model's
            # name), not the cache folder it was loaded from, which is this machine's:
            # `moalign.load_policy` resolves the name wherever the adapter is loaded. Renamed after
            # saving, since peft looks the recorded name up (on the hub, if it is no folder).
            from huggingface_hub import ModelCard
            from peft import PeftConfig

            adapter = PeftConfig.from_pretrained(directory)
            loaded_from, name = adapter.base_model_name_or_path, self.config.name
            if loaded_from != name:
                adapter.base_model_name_or_path = name
                adapter.save_pretrained(directory)
                card = ModelCard.load(directory / "README.md")
                card.data.base_model = name
                card.data.tags = [f"base_model:adapter:{name}" if t == f"base_model:adapter:{loaded_from}" else t
                                  for t in card.data.tags or []]
                card.save(directory / "README.md")
        else:
            torch.save(self.model.state_dict() if state_dict is None else state_dict, directory / "model.pt")

    def autocast(self, enabled: bool):
        if enabled and self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()
