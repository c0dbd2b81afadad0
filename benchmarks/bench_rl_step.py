"""One RL step of SmolLM2-135M-Instruct (16 samples x 32 new tokens, 2 objectives, LoRA r=16),
moalign against TRL's GRPOTrainer on the same configuration.

    python benchmarks/bench_rl_step.py [--steps 5] [--model smollm2-135m-instruct] [--skip-trl] [--skip-generate-ab]

Prints the sampling of one step's prompts with each group's prompt prefilled once against the
plain call (same seeds, alternated), moalign's step broken into generate / score / reference
forward / update, and both trainers' seconds per step and samples/s (the first step, which warms
up allocators, is dropped).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "pipelines" / "data" / "summaries.jsonl"
N_PROMPTS, N_GENERATIONS, NEW_TOKENS, BETA, LR = 4, 4, 32, 0.04, 2e-4


def run_moalign(model: str, steps: int, out: Path) -> dict:
    from moalign.rl.config import (AlgorithmConfig, DataConfig, ModelConfig, OptimConfig, RewardConfig,
                                   SamplingConfig, TrackingConfig, TrainConfig)
    from moalign.rl.trainer import train

    config = TrainConfig(
        model=ModelConfig(name=model, lora_r=16, lora_alpha=32),
        data=DataConfig(train=str(DATA), max_eval_prompts=1),
        sampling=SamplingConfig(num_generations=N_GENERATIONS, prompts_per_step=N_PROMPTS, max_new_tokens=NEW_TOKENS,
                                eval_num_generations=1),
        reward=RewardConfig(objectives={"rouge_l": {}, "verbosity": {}}, weights=[0.5, 0.5]),
        algorithm=AlgorithmConfig(name="grpo", kl_coef=BETA),
        optim=OptimConfig(steps=steps, lr=LR), tracking=TrackingConfig(enabled=False),
        output_dir=str(out), checkpoint_every=10_000, progress=False)
    history = train(config).history.iloc[1:]
    parts = {k: history[f"time/{k}"].mean() for k in ("generate", "score", "reference", "update", "step")}
    return parts


def run_generation_ab(model_name: str, reps: int = 2) -> dict:
    """Seconds to sample one step's 16 completions, each prompt prefilled once (`share_prompt`) or
    repeated per completion (the plain `generate` call), alternated so that both see the same load."""
    from moalign.data import load_prompt_records
    from moalign.models import load_causal_lm, load_tokenizer
    from moalign.rl.sampling import generate

    tokenizer = load_tokenizer(model_name)
    tokenizer.padding_side = "left"
    model = load_causal_lm(model_name).eval()
    prompts = [r["prompt"] for r in load_prompt_records(DATA)[:N_PROMPTS]]
    times, same = {True: [], False: []}, True
    for rep in range(reps + 1):  # rep 0 warms up
        outs = {}
        for share in (True, False):
            t0 = time.perf_counter()
            outs[share] = generate(model, tokenizer, prompts, N_GENERATIONS, NEW_TOKENS, seed=rep, share_prompt=share)
            if rep:
                times[share].append(time.perf_counter() - t0)
        same &= bool((outs[True].input_ids == outs[False].input_ids).all())
    return {"shared": statistics.mean(times[True]), "plain": statistics.mean(times[False]), "identical": same}


def run_trl(model_name: str, steps: int, out: Path) -> float:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from moalign.data import load_prompt_records
    from moalign.models import load_tokenizer, resolve
    from moalign.registry import get_objective

    records = load_prompt_records(DATA)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "references": r["references"]}
                                 for r in records])
    rouge, verbosity = get_objective("rouge_l"), get_objective("verbosity")

    def _texts(completions):
        return [c[0]["content"] if isinstance(c, list) else c for c in completions]

    def rouge_reward(prompts, completions, references, **kwargs):
        from moalign.objective import Batch

        texts = _texts(completions)
        return rouge.score(Batch(prompts=[""] * len(texts), completions=texts, references=references)).tolist()

    def brevity_reward(prompts, completions, **kwargs):
        from moalign.objective import Batch

        texts = _texts(completions)
        return (-verbosity.score(Batch(prompts=[""] * len(texts), completions=texts))).tolist()

    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.t0)

    tokenizer = load_tokenizer(model_name)
    model = AutoModelForCausalLM.from_pretrained(resolve(model_name), dtype=torch.float32)
    args = GRPOConfig(output_dir=str(out / "trl"), per_device_train_batch_size=N_PROMPTS * N_GENERATIONS,
                      num_generations=N_GENERATIONS, max_completion_length=NEW_TOKENS, beta=BETA, learning_rate=LR,
                      max_steps=steps, logging_steps=1, report_to=[], use_cpu=True, bf16=False, save_strategy="no",
                      reward_weights=[0.5, 0.5], temperature=1.0, disable_tqdm=True)
    trainer = GRPOTrainer(model=model, reward_funcs=[rouge_reward, brevity_reward], args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[Timer()],
                          peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    trainer.train()
    return statistics.mean(times[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--skip-generate-ab", action="store_true")
    args = parser.parse_args()
    import torch

    n = N_PROMPTS * N_GENERATIONS
    print(f"model={args.model} samples/step={n} new_tokens={NEW_TOKENS} steps={args.steps} "
          f"torch={torch.__version__} threads={torch.get_num_threads()}")
    if not args.skip_generate_ab:
        ab = run_generation_ab(args.model)
        print(f"generate, one step's {n} samples: prompts prefilled once {ab['shared']:.2f} s, plain {ab['plain']:.2f} s "
              f"({ab['plain'] / ab['shared']:.2f}x); same tokens under the same seeds: {ab['identical']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        parts = run_moalign(args.model, args.steps, Path(tmp))
        print("moalign step breakdown (s): " + ", ".join(f"{k}={v:.2f}" for k, v in parts.items()))
        print(f"moalign: {parts['step']:.2f} s/step, {n / parts['step']:.2f} samples/s", flush=True)
        if not args.skip_trl:
            trl_step = run_trl(args.model, args.steps, Path(tmp))
            print(f"TRL GRPOTrainer: {trl_step:.2f} s/step, {n / trl_step:.2f} samples/s")
            print(f"speed-up moalign / TRL: {trl_step / parts['step']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
