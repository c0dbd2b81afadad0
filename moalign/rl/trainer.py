"""The RL loop: samples -> scores -> scalar reward -> advantages -> loss, one step at a time.

Reads top to bottom: `train` sets up (data, reward, policy, optimizer, MLflow run, resume),
then each step samples groups of completions, scores them with every objective, turns the
scores into one reward, computes advantages (REINFORCE / RLOO / GRPO) and takes a clipped
policy-gradient step with a KL anchor to the reference. Metrics and sample tables are buffered
and reach MLflow together with each checkpoint, so a resumed run never logs a step twice.
"""
from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from moalign.errors import MoalignError
from moalign.models import torch_dtype
from moalign.registry import build_objectives
from moalign.rl.advantages import advantages_for
from moalign.rl.checkpoint import load_checkpoint_state, restore_rng, save_checkpoint
from moalign.rl.kl import AdaptiveKLController, kl_loss_term, kl_per_token, sequence_kl
from moalign.rl.loss import policy_loss, token_mean
from moalign.rl.conditioning import condition_prompt, conditioned_tokenizer, draw_weights
from moalign.rl.distributed import Processes, share_scoring
from moalign.rl.config import TrainConfig
from moalign.rl.evaluation import batch_for, evaluate_policy
from moalign.rl.policy import Policy
from moalign.rl.reward import MultiObjectiveReward
from moalign.rl.runs import (TrainResult, cost_of, end_run, finish_run, interrupted, load_data,  # noqa: F401 (cost_of: re-exported)
                             load_validation, record_start, start_run)
from moalign.rl.sampling import completion_logprobs, generate, grouped_completion_logprobs
from moalign.rl.sharding import check_resumable, full, full_model_state, full_optimizer_state, load_optimizer_state, root_gathered, shard_policy
from moalign.tracking import make_tracker


def step_seed(seed: int, step: int) -> int:
    """A per-step seed, so resumed runs draw the same prompts and samples."""
    return int(hashlib.sha256(f"{seed}:{step}".encode()).hexdigest()[:8], 16)


def prompts_for_step(n_records: int, per_step: int, step: int, seed: int) -> list[int]:
    """Epoch-wise shuffled prompt indices for `step` (1-based), a pure function of its inputs."""
    start = (step - 1) * per_step
    out = []
    for k in range(start, start + per_step):
        epoch, pos = divmod(k, n_records)
        out.append(int(np.random.default_rng(seed + epoch).permutation(n_records)[pos]))
    return out


def forward_passes(algo) -> int:
    """Passes over a step's sequences: sampling, reference log-probs, the sampling policy's
    log-probs (when the KL is in the reward or there are several inner epochs), one per epoch."""
    return 2 + int(algo.kl_in_reward or algo.inner_epochs > 1) + algo.inner_epochs


def check_objective_fields(objectives: dict, records: list[dict]) -> None:
    """Fail before any model loads if the data lacks a field an objective needs."""
    probe = batch_for(records, list(range(len(records))), [""] * len(records))
    for objective in objectives.values():
        objective.check_fields(probe)


def policy_update(policy: Policy, rollout, rewards: np.ndarray, config: TrainConfig, kl_coef: float, state: dict,
                  processes: Processes | None = None) -> dict:
    """One step's update: reference log-probs, KL placement, advantages, then `inner_epochs` passes of
    the (clipped) policy loss plus the KL term, each ending in an optimizer step.

    `state["dirty"]` turns True at the first optimizer step: from then until the trainer records the
    step, the weights belong to no recorded step, and an interrupt must not checkpoint them.

    Across processes (`processes`) `rollout` and `rewards` are this process's share; the token count,
    advantages, gradients and returned metrics are the global batch's (see `moalign.rl.distributed`).
    """
    processes = processes or Processes()
    algo, optim = config.algorithm, config.optim
    device, T, temp = policy.device, rollout.n_completion, config.sampling.temperature
    G = config.sampling.num_generations
    ids, attn = rollout.input_ids.to(device), rollout.attention_mask.to(device)
    valid = torch.as_tensor(np.isfinite(rewards), device=device)  # samples an objective dropped carry NaN
    mask = (rollout.completion_mask.to(device) & valid.unsqueeze(1)).float()
    n_tokens = processes.sum(mask.sum()).clamp(min=1)  # the global count: shares' losses add up to the token mean
    rows = max(1, optim.micro_batch_size // G) * G  # micro-batches hold whole groups
    chunks = [slice(i, i + rows) for i in range(0, ids.shape[0], rows)]
    timings = {}

    def logprobs(model, c, with_entropy=False):
        if optim.share_prompt_prefix and G > 1:
            return grouped_completion_logprobs(model, ids[c], attn[c], T, G, temp, with_entropy)
        return completion_logprobs(model, ids[c], attn[c], T, temp, with_entropy)

    t0 = time.perf_counter()
    # In eval mode, as the samples were drawn: a base model with dropout (GPT-2, OPT) would otherwise
    # give a noisy reference, and an in-reward KL that is not 0 where the policy is the reference.
    was_training = policy.model.training
    policy.model.eval()
    with torch.no_grad(), policy.autocast(optim.bf16), policy.as_reference() as reference:
        ref_lp = torch.cat([logprobs(reference, c)[0] for c in chunks])
    old_lp = None
    if algo.kl_in_reward or algo.inner_epochs > 1:  # the sampling policy's log-probs, before any update
        with torch.no_grad(), policy.autocast(optim.bf16):
            old_lp = torch.cat([logprobs(policy.model, c)[0] for c in chunks])
    policy.model.train(was_training)
    timings["time/reference"] = time.perf_counter() - t0

    in_reward = {}
    if algo.kl_in_reward and kl_coef > 0:
        penalty = sequence_kl(old_lp, ref_lp, mask, algo.kl_estimator)
        rewards = rewards - kl_coef * penalty
        kept = np.isfinite(rewards)
        in_reward = {"kl/in_reward": float(penalty[kept].sum()), "_in_reward_n": float(kept.sum())}
    all_adv = advantages_for(algo, np.asarray(processes.gather(list(rewards))), G, state)  # baselines of the global batch
    adv = torch.tensor(all_adv[processes.shard(len(all_adv))], device=device, dtype=torch.float32).unsqueeze(1)

    t0 = time.perf_counter()
    clip = algo.clip_eps if (algo.clip_eps and algo.inner_epochs > 1) else None
    # `kl` is k3's value whatever the configured estimator: never negative, so the adaptive controller
    # reads a divergence; the configured estimator's value is logged beside it (`kl/k1`, `kl/k2`)
    sums = {"loss": 0.0, "kl": 0.0, "entropy": 0.0, "clip_frac": 0.0,
            **({f"kl/{algo.kl_estimator}": 0.0} if algo.kl_estimator != "k3" else {})}
    for epoch in range(algo.inner_epochs):
        for c in chunks:
            with policy.autocast(optim.bf16):
                logp, entropy = logprobs(policy.model, c, with_entropy=epoch == 0)
            m = mask[c]
            per_token, clipped = policy_loss(logp, None if old_lp is None else old_lp[c], adv[c], clip)
            if not algo.kl_in_reward and kl_coef > 0:
                per_token = per_token + kl_coef * kl_loss_term(logp, ref_lp[c], algo.kl_estimator)
            loss = token_mean(per_token, m, n_tokens)
            loss.backward()
            sums["loss"] += loss.item() / algo.inner_epochs
            sums["clip_frac"] += float(token_mean(clipped.float(), m, n_tokens)) / algo.inner_epochs
            if epoch == 0:
                sums["kl"] += float(token_mean(kl_per_token(logp.detach(), ref_lp[c], "k3"), m, n_tokens))
                if algo.kl_estimator != "k3":
                    sums[f"kl/{algo.kl_estimator}"] += float(token_mean(kl_per_token(logp.detach(), ref_lp[c], algo.kl_estimator),
                                                                        m, n_tokens))
                sums["entropy"] += float(token_mean(entropy, m, n_tokens))
        processes.sum_gradients(policy.parameters())
        grad_norm = full(torch.nn.utils.clip_grad_norm_(policy.parameters(), optim.max_grad_norm))
        state["dirty"] = True
        state["optimizer"].step()
        state["optimizer"].zero_grad(set_to_none=True)
    state["scheduler"].step()
    timings["time/update"] = time.perf_counter() - t0
    sums = processes.sum_floats({**sums, **in_reward, "samples_dropped": float((~valid).sum())})
    if in_reward:  # the mean per-sequence KL taken off the reward, over the global batch
        sums["kl/in_reward"] /= max(sums.pop("_in_reward_n"), 1.0)
    return {**sums, "grad_norm": float(grad_norm), "advantage_std": float(torch.tensor(all_adv, device=device, dtype=torch.float32).std()),
            "kl_coef": kl_coef, "lr": state["scheduler"].get_last_lr()[0], **timings}


def train(config: TrainConfig, resume_run_id: str | None = None, parent_run_id: str | None = None,
          tags: dict | None = None, tracker=None) -> TrainResult:
    """Fine-tune `config.model` under the scalarized reward; see the module docstring.

    `resume_run_id` continues that run from its newest checkpoint, or from step 0 in the same run
    when it was stopped before its first checkpoint.
    """
    if config.supervised.enabled:  # fine-tuning on a sample pool: its own loop, the same record
        from moalign.rl.supervised import train_supervised

        return train_supervised(config, resume_run_id, parent_run_id, tags, tracker)
    started = time.perf_counter()
    processes = Processes.launched(config)  # one process, or this one's place among the launcher's
    train_records, eval_records = load_data(config)
    validation_records = load_validation(config)
    reward_fn = MultiObjectiveReward(config.reward)
    extra = build_objectives(config.eval_objectives) if config.eval_objectives else {}
    eval_objectives = {**reward_fn.all_objectives, **extra}
    check_objective_fields(reward_fn.all_objectives, train_records)
    check_objective_fields(eval_objectives, eval_records + validation_records)
    share_scoring(reward_fn, processes)  # after eval_objectives took the plain ones: only the main process evaluates
    algo = config.algorithm
    schedule = config.reward.schedule(config.optim.steps)  # weights per step, or None: reward.weights throughout

    # Everything that can fail on the user's input fails before an MLflow run exists.
    tracker = tracker or make_tracker(config.tracking.enabled, config.tracking.experiment, config.tracking.tracking_uri)
    if not processes.is_main:  # one process talks to MLflow
        tracker = make_tracker(False, config.tracking.experiment, None)
    resume_state = None
    if resume_run_id:
        checkpoint_dir = Path(config.output_dir) / resume_run_id / "checkpoint"
        resume_state = load_checkpoint_state(checkpoint_dir)
        if resume_state:
            check_resumable(resume_state["optimizer"], processes.sharded, checkpoint_dir)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    # Sharded, the model loads on the CPU (in the dtype it has on the device) and only its shards reach the device.
    model_config = config.model
    if processes.sharded:
        model_config = replace(model_config, dtype=str(torch_dtype(model_config.dtype, processes.device)).removeprefix("torch."))
    policy = Policy(model_config, device="cpu" if processes.sharded else processes.device,
                    adapter_dir=resume_state["adapter_dir"] if resume_state else None,
                    max_new_tokens=config.sampling.max_new_tokens)
    if config.model.lora:  # LoRA's random init is per process; full fine-tuning loads the same file everywhere
        processes.broadcast_parameters(policy.parameters())
    if processes.sharded:  # FSDP2: after the broadcast, so the shards cut one set of weights
        shard_policy(policy, processes.device)

    run_id, run_dir = start_run(tracker, config, resume_run_id, tags, parent_run_id)
    run_id, run_dir = processes.broadcast((run_id, run_dir))  # the main process's run
    checkpoint_dir = run_dir / "checkpoint"
    logged_through = record_start(tracker, run_id, config, run_dir, eval_objectives, not resume_state, bool(resume_run_id))

    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    warmup = config.optim.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    kl_control = AdaptiveKLController(algo.kl_coef, algo.target_kl, algo.kl_horizon) if algo.target_kl else None
    state = {"optimizer": optimizer, "scheduler": scheduler, "baseline": None, "dirty": False}
    start_step, history = 0, []
    if resume_state:
        if processes.sharded:
            load_optimizer_state(policy, optimizer, resume_state["optimizer"])
        else:
            optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        restore_rng(resume_state)
        trainer_state = resume_state["trainer"]
        start_step, history, state["baseline"] = resume_state["step"], trainer_state["history"], trainer_state["baseline"]
        reward_fn.load_state_dict(trainer_state["reward"])
        if kl_control:
            kl_control.value = trainer_state["kl_coef"]

    def snapshot() -> dict:
        """The trainer state as of the last recorded step (JSON-safe), what a checkpoint stores."""
        return {"n_history": len(history), "baseline": state["baseline"], "reward": copy.deepcopy(reward_fn.state_dict()),
                "kl_coef": kl_control.value if kl_control else algo.kl_coef}

    committed = snapshot()
    last_checkpoint = start_step
    pending_metrics, pending_samples = [], []

    def checkpoint(step: int) -> None:
        """Log the buffered steps, then checkpoint: MLflow never misses a step a checkpoint holds."""
        nonlocal last_checkpoint, logged_through
        tracker.log_metrics(run_id, [(s, m) for s, m in pending_metrics if s > logged_through])
        for s, frame in pending_samples:
            if s > logged_through:
                tracker.log_table(run_id, frame, "samples.json")
        logged_through = max(logged_through, step)
        pending_metrics.clear()
        pending_samples.clear()
        trainer_state = {k: v for k, v in committed.items() if k != "n_history"}
        # sharded, every process takes part in gathering the states whole
        gathered = (full_model_state(policy), full_optimizer_state(policy, optimizer)) if processes.sharded else (None, None)
        if processes.is_main:  # one writer; every process reads it on resume
            save_checkpoint(checkpoint_dir, policy, optimizer, scheduler, step,
                            {**trainer_state, "history": history[: committed["n_history"]]}, *gathered)
        last_checkpoint = step

    step = start_step
    bar = tqdm(range(start_step + 1, config.optim.steps + 1), desc="train", disable=None if (config.progress and processes.is_main) else True,
               initial=start_step, total=config.optim.steps)
    try:
        for step in bar:
            step_start = t0 = time.perf_counter()
            rows = prompts_for_step(len(train_records), config.sampling.prompts_per_step, step, config.seed)
            prompts, drawn = [train_records[i]["prompt"] for i in rows], None
            if config.conditioning.enabled:  # each prompt group trains under its own weights, stated in its prompt
                drawn = draw_weights(config.conditioning, len(reward_fn.names), len(rows), config.seed, step)
                prompts = [condition_prompt(p, reward_fn.names, w) for p, w in zip(prompts, drawn)]
            policy.model.eval()  # no dropout while sampling
            mine = processes.shard(len(rows))  # this process's share of the prompt groups
            with root_gathered(policy.model):
                rollout = generate(policy.model, policy.tokenizer, prompts[mine],
                                   config.sampling.num_generations, config.sampling.max_new_tokens,
                                   config.sampling.temperature, config.sampling.top_k, config.sampling.top_p,
                                   config.model.use_chat_template, seed=processes.seed(step_seed(config.seed, step)),
                                   static_cache=config.sampling.static_cache, synced=processes.sharded)
            if processes.sharded:  # the same completion length everywhere: every process runs the same forwards
                rollout = rollout.padded(processes.max(rollout.n_completion), policy.tokenizer.pad_token_id)
            policy.model.train()
            t_generate = time.perf_counter() - t0

            t0 = time.perf_counter()
            # Every process scores the global batch (its own share, see share_scoring): global reward statistics.
            index = processes.gather([mine.start + i for i in rollout.prompt_index])
            prompt_rows = [rows[i] for i in index]
            batch = batch_for(train_records, prompt_rows, processes.gather(rollout.texts), groups=index)
            weights = drawn[index] if drawn is not None else (
                np.tile(schedule.at(step), (len(batch), 1)) if schedule is not None else None)
            try:
                rewards, raw, metrics = reward_fn(batch, weights)
            except MoalignError as exc:  # an objective failed: one line, the run FAILED, its checkpoint kept
                how = "re-run the same search or pipeline" if parent_run_id else f"moalign train --resume {run_id}"
                raise MoalignError(f"step {step}: {exc}; run marked FAILED, its last checkpoint kept "
                                   f"(continue with: {how})") from exc
            if drawn is not None:
                metrics.update({f"conditioning/weight/{n}": float(drawn[:, j].mean()) for j, n in enumerate(reward_fn.names)})
            if schedule is not None:  # the weights in force this step
                metrics.update({f"weight/{n}": float(w) for n, w in zip(reward_fn.names, schedule.at(step))})
            t_score = time.perf_counter() - t0

            kl_coef = kl_control.value if kl_control else algo.kl_coef
            update = policy_update(policy, rollout, rewards[processes.shard(len(rewards))], config, kl_coef, state, processes)
            if not math.isfinite(update["loss"]):
                raise MoalignError(f"step {step}: loss is not finite; lower optim.lr or raise algorithm.kl_coef")
            if kl_control:
                kl_control.update(update["kl"])
            n_tokens = int(processes.sum(rollout.completion_mask.sum()))
            n_sequence = int(processes.sum(rollout.attention_mask.sum()))
            n_forward = forward_passes(algo) * n_sequence
            step_time = time.perf_counter() - step_start
            metrics.update(update)
            metrics.update({"time/generate": t_generate, "time/score": t_score, "time/step": step_time,
                            "tokens_per_s": n_tokens / step_time, "samples_per_s": len(batch) / step_time,
                            "completion_tokens/mean": n_tokens / len(batch),
                            "tokens/generated": n_tokens, "tokens/forward": n_forward,
                            "tokens/trained": algo.inner_epochs * n_sequence})
            metrics = {k: float(v) for k, v in metrics.items()}
            # The step is recorded: weights, optimizer, reward and history now agree on `step`.
            history.append({"step": step, **metrics})
            pending_metrics.append((step, metrics))
            if config.tracking.samples_every and step % config.tracking.samples_every == 0:
                told = {} if drawn is None else {f"w_{n}": drawn[index, j] for j, n in enumerate(reward_fn.names)}
                pending_samples.append((step, pd.concat([pd.DataFrame({"step": step, "prompt": batch.prompts, **told,
                                                                       "completion": batch.completions, "reward": rewards}), raw], axis=1)))
            committed = snapshot()
            state["dirty"] = False
            bar.set_postfix(reward=f"{metrics['reward/total']:.3f}", kl=f"{update['kl']:.3f}")
            if step % config.checkpoint_every == 0 or step == config.optim.steps:
                checkpoint(step)
        bar.close()
        adapter_dir = run_dir / "adapter"
        # The main process saves, evaluates and logs the adapter every process holds. Sharded, every
        # process takes part in gathering it and in the evaluation's generation (its forwards gather
        # weights together); only the main process scores.
        adapter_state = full_model_state(policy) if processes.sharded else None
        if not processes.is_main and not processes.sharded:
            return TrainResult(run_id, run_dir, adapter_dir, config.optim.steps, {}, pd.DataFrame(history),
                               pd.DataFrame(), time.perf_counter() - started)
        if processes.is_main:
            policy.save(adapter_dir, adapter_state)
        t_eval, eval_counts = time.perf_counter(), {}
        tokenizer = policy.tokenizer  # a conditioned policy is evaluated at the configured weights
        if config.conditioning.enabled:
            tokenizer = conditioned_tokenizer(tokenizer, reward_fn.names, reward_fn.weights)
        with root_gathered(policy.model):
            scores, samples = evaluate_policy(policy.model, tokenizer, eval_records,
                                              eval_objectives if processes.is_main else {}, config.sampling,
                                              config.model.use_chat_template, seed=config.seed, counter=eval_counts,
                                              synced=processes.sharded, progress=config.progress and processes.is_main)
            validation = evaluate_policy(policy.model, tokenizer, validation_records,
                                         eval_objectives if processes.is_main else {}, config.sampling,
                                         config.model.use_chat_template, seed=config.seed, counter=eval_counts,
                                         synced=processes.sharded, progress=config.progress and processes.is_main
                                         )[0] if validation_records else None
        t_eval = time.perf_counter() - t_eval
        if not processes.is_main:
            return TrainResult(run_id, run_dir, adapter_dir, config.optim.steps, {}, pd.DataFrame(history),
                               pd.DataFrame(), time.perf_counter() - started)
    except KeyboardInterrupt:
        done = committed["n_history"] and history[committed["n_history"] - 1]["step"]
        since = f"the checkpoint at step {last_checkpoint}" if last_checkpoint else "step 1 (no checkpoint yet)"
        if state["dirty"]:  # stopped part-way through an update: these weights belong to no step
            where = f"inside step {step}'s update; resume continues from {since}"
        elif processes.sharded and done > last_checkpoint:
            # saving gathers on every process at once, and each was stopped at a point of its own
            where = f"after step {done}; resume continues from {since}"
        else:
            where = f"after step {done}"
            if done > last_checkpoint:
                checkpoint(done)
        interrupted(tracker, run_id, parent_run_id, where)
        raise
    except BaseException:
        end_run(tracker, run_id, "FAILED")
        raise
    finally:
        bar.close()

    return finish_run(tracker, run_id, config, run_dir, scores, samples, history, eval_counts, t_eval, started,
                      validation)
