"""One RL step of a randomly initialised ~1B Llama: generation throughput, moalign, TRL GRPOTrainer.

    python benchmarks/bench_gpu_step.py [--steps 4] [--bandwidth 3e12] [--skip-trl] [--json out.json]
    python benchmarks/bench_gpu_step.py --tiny     # the same code on CPU with a tiny model (tests)

The model is built from a Llama-3.2-1B-shaped config (no weights fetched) with a word-level
tokenizer whose EOS id lies outside the model's vocabulary: no completion can stop early, so every
sample is `max_new_tokens` long and both trainers do the same work. Printed: generation tokens/s
and its fraction of the memory-bandwidth bound (each decoding step reads every weight once:
rows x bandwidth / weight bytes tokens/s; KV-cache reads are not counted, so the bound is
optimistic), moalign's step and its parts, TRL's step, all in one run (run by gpu_check.sh).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "pipelines" / "data" / "summaries.jsonl"
BETA, LR = 0.04, 2e-4
SIZES = {  # Llama-3.2-1B's shape (1.24B parameters, tied embeddings) and a tiny one for the tests
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0),
    "tiny": dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
}
SHAPES = {"1b": dict(prompts=8, generations=8, new_tokens=128), "tiny": dict(prompts=2, generations=2, new_tokens=4)}


def make_tokenizer(vocab_size: int):
    """Words of the prompts (then fillers) up to the model's vocabulary; EOS gets id `vocab_size`,
    which the model cannot emit."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from moalign.data import load_prompt_records

    words = dict.fromkeys(w for r in load_prompt_records(DATA) for w in r["prompt"].split())
    vocab = {"[PAD]": 0, "[UNK]": 1}
    for word in list(words) + [f"w{i}" for i in range(vocab_size)]:
        if len(vocab) == vocab_size:
            break
        vocab.setdefault(word, len(vocab))
    vocab["[EOS]"] = vocab_size
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]",
                                        model_max_length=4096)
    tokenizer.padding_side = "left"
    return tokenizer


def build_model(size: str, path: Path, device: str, dtype) -> tuple[Path, int]:
    """Random weights from the config, saved with the tokenizer; returns (path, parameter count)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer(SIZES[size]["vocab_size"])
    # The config names no EOS (transformers refuses one outside the vocabulary); generation takes the
    # tokenizer's, which the model cannot emit.
    config = LlamaConfig(**SIZES[size], max_position_embeddings=4096, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=None, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):  # initialising 1.2B parameters on the CPU alone takes a minute
        model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, sum(p.numel() for p in model.parameters())


def time_generation(path: Path, dtype: str, device: str, shape: dict, bandwidth: float, reps: int) -> list[dict]:
    """Seconds to sample one step's completions, per decoding path, after a warm-up (the static
    cache's warm-up compiles)."""
    import torch

    from moalign.data import load_prompt_records
    from moalign.models import load_causal_lm, load_tokenizer
    from moalign.rl.sampling import generate

    tokenizer = load_tokenizer(str(path))
    tokenizer.padding_side = "left"
    model = load_causal_lm(str(path), dtype, device).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    prompts = [r["prompt"] for r in load_prompt_records(DATA)[: shape["prompts"]]]
    rows = shape["prompts"] * shape["generations"]
    paths = {"shared prompt, dynamic cache": dict(share_prompt=True), "plain, dynamic cache": dict(share_prompt=False)}
    if device.startswith("cuda"):
        paths["static cache, compiled"] = dict(static_cache=True)
    results = []
    for name, kwargs in paths.items():
        times = []
        try:
            for rep in range(reps + 1):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = generate(model, tokenizer, prompts, shape["generations"], shape["new_tokens"], seed=rep, **kwargs)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        except Exception as exc:  # e.g. torch.compile without a working compiler: the other paths still count
            print(f"gpu_check: generate [{name}] failed: {type(exc).__name__}: {exc}".splitlines()[0], flush=True)
            continue
        assert int(out.completion_mask.sum()) == rows * shape["new_tokens"], "a completion stopped early"
        tokens_s = rows * shape["new_tokens"] / statistics.mean(times[1:])
        bound = rows * bandwidth / weight_bytes
        results.append({"path": name, "warmup_s": times[0], "s": statistics.mean(times[1:]), "tokens_per_s": tokens_s,
                        "bandwidth_fraction": tokens_s / bound})
        print(f"gpu_check: generate [{name}] {rows} x {shape['new_tokens']} tokens: {results[-1]['s']:.2f} s "
              f"(warm-up {times[0]:.1f} s), {tokens_s:,.0f} tokens/s = {tokens_s / bound:.1%} of the bandwidth bound "
              f"({bound:,.0f} tokens/s at {bandwidth / 1e12:.2f} TB/s, {weight_bytes / 1e9:.2f} GB of weights)", flush=True)
    del model
    return results


def run_moalign(path: Path, dtype: str, shape: dict, steps: int, out: Path) -> dict:
    from moalign.rl.config import (AlgorithmConfig, DataConfig, ModelConfig, OptimConfig, RewardConfig,
                                   SamplingConfig, TrackingConfig, TrainConfig)
    from moalign.rl.trainer import train

    config = TrainConfig(
        model=ModelConfig(name=str(path), dtype=dtype, lora_r=16, lora_alpha=32),
        data=DataConfig(train=str(DATA), max_eval_prompts=1),
        sampling=SamplingConfig(num_generations=shape["generations"], prompts_per_step=shape["prompts"],
                                max_new_tokens=shape["new_tokens"], eval_num_generations=1),
        reward=RewardConfig(objectives={"bleu": {}, "verbosity": {}}, weights=[0.5, 0.5]),
        algorithm=AlgorithmConfig(name="grpo", kl_coef=BETA),
        optim=OptimConfig(steps=steps, lr=LR, micro_batch_size=shape["prompts"] * shape["generations"]),
        tracking=TrackingConfig(enabled=False), output_dir=str(out), checkpoint_every=10_000, progress=False)
    history = train(config).history.iloc[1:]
    parts = {k: float(history[f"time/{k}"].mean()) for k in ("generate", "score", "reference", "update", "step")}
    rows = shape["prompts"] * shape["generations"]
    parts["generate_tokens_per_s"] = float((history["completion_tokens/mean"] * rows / history["time/generate"]).mean())
    return parts


def _run_trl(path: Path, shape: dict, steps: int, out: Path, device: str) -> float:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from moalign.data import load_prompt_records
    from moalign.models import load_tokenizer
    from moalign.objective import Batch
    from moalign.registry import get_objective

    records = load_prompt_records(DATA)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "references": r["references"]} for r in records])
    bleu, verbosity = get_objective("bleu"), get_objective("verbosity")

    def bleu_reward(prompts, completions, references, **kwargs):
        return bleu.score(Batch(prompts=prompts, completions=completions, references=references)).tolist()

    def brevity_reward(prompts, completions, **kwargs):
        return (-verbosity.score(Batch(prompts=prompts, completions=completions))).tolist()

    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    cuda = device.startswith("cuda")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if cuda else torch.float32)
    n = shape["prompts"] * shape["generations"]
    args = GRPOConfig(output_dir=str(out / "trl"), per_device_train_batch_size=n, num_generations=shape["generations"],
                      max_completion_length=shape["new_tokens"], beta=BETA, learning_rate=LR, max_steps=steps,
                      logging_steps=1, report_to=[], use_cpu=not cuda, bf16=cuda, save_strategy="no",
                      reward_weights=[0.5, 0.5], temperature=1.0, disable_tqdm=True)
    trainer = GRPOTrainer(model=model, reward_funcs=[bleu_reward, brevity_reward], args=args, train_dataset=dataset,
                          processing_class=load_tokenizer(str(path)), callbacks=[Timer()],
                          peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    trainer.train()
    return statistics.mean(times[1:])


def run_trl(path: Path, shape: dict, steps: int, out: Path, device: str) -> float:
    """TRL's s/step. TRL 1.16 reads transformers 5's deprecated gradient-checkpointing names inside
    its own code (a FutureWarning at every step, neither our call nor ours to fix): only those are silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`\w*gradient_checkpointing\w*` is deprecated", category=FutureWarning)
        return _run_trl(path, shape, steps, out, device)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the script, measures nothing")
    parser.add_argument("--steps", type=int, default=None, help="RL steps per trainer (mean over all but the first)")
    parser.add_argument("--bandwidth", type=float, default=3e12, help="memory bandwidth in bytes/s (H100 SXM: ~3.35e12)")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    import torch

    size = "tiny" if args.tiny else "1b"
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --tiny to check the script on CPU)", file=sys.stderr)
        return 2
    steps = args.steps or (2 if args.tiny else 4)
    shape, dtype = SHAPES[size], "auto"  # bf16 on CUDA, float32 on CPU
    n = shape["prompts"] * shape["generations"]
    results = {"size": size, "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "samples": n,
               "new_tokens": shape["new_tokens"], "steps": steps}
    print(f"gpu_check: {results['device']}, torch {torch.__version__}, {n} samples x {shape['new_tokens']} tokens a step",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path, n_params = build_model(size, Path(tmp) / "model", device, torch.bfloat16 if device == "cuda" else torch.float32)
        results["parameters"] = n_params
        print(f"gpu_check: built a random {n_params / 1e9:.3f}B-parameter Llama in {time.perf_counter() - t0:.0f} s", flush=True)
        results["generate"] = time_generation(path, dtype, device, shape, args.bandwidth, reps=1 if args.tiny else 2)
        results["moalign"] = run_moalign(path, dtype, shape, steps, Path(tmp))
        m = results["moalign"]
        print("gpu_check: moalign step (s): " + ", ".join(f"{k}={m[k]:.2f}" for k in ("generate", "score", "reference", "update")) +
              f"; {m['step']:.2f} s/step, {n / m['step']:.2f} samples/s, generation {m['generate_tokens_per_s']:,.0f} tokens/s",
              flush=True)
        if not args.skip_trl:
            try:
                trl_step = run_trl(path, shape, steps, Path(tmp), device)
            except ImportError as exc:  # TRL or datasets missing: the rest of the check still stands
                print(f"gpu_check: TRL skipped ({exc})", flush=True)
            else:
                results["trl"] = {"step": trl_step}
                print(f"gpu_check: TRL GRPOTrainer: {trl_step:.2f} s/step, {n / trl_step:.2f} samples/s; "
                      f"moalign / TRL: {trl_step / m['step']:.2f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
