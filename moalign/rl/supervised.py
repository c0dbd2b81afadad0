"""Supervised fine-tuning on a pool of scored samples: the fine-tune of sample-score-select.

`train_supervised` reads like the RL loop (`trainer.py`) and leaves the same record (`runs.py`),
so searches, reports, `load_policy` and `export` treat its runs as they treat RL's. Its examples
come from a pool (`moalign.pool`), chosen by `supervised.select`:

- `top_k`: each prompt's k best feasible samples under `reward.weights` (`moalign.selection`):
  rejection-sampling fine-tuning (RAFT, Dong et al. 2023; the improve step of ReST);
- `rewards_in_context`: every feasible sample, its scores stated in its prompt
  (`moalign.rl.rewards_in_context`), so one run serves every weight vector.

Then `supervised.epochs` passes over them in shuffled batches of `supervised.batch_size`, each an
AdamW step on the mean negative log-likelihood of the completion tokens: the prompt is context,
not a target; the EOS ending each completion is one, since when to stop is learnt too. With
`kl_coef` > 0 the exact KL to the reference on those positions is added (`kl.exact_kl`), the anchor
Quark's reward-token fine-tuning uses. A batch is a pure function of (seed, step), so a resumed run
trains on what the uninterrupted one did; checkpoints are the RL runs' own (`checkpoint.py`).
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from moalign.errors import MoalignError
from moalign.logprobs import gather_logprobs, pad
from moalign.models import format_prompt
from moalign.registry import build_objectives
from moalign.rl.checkpoint import load_checkpoint_state, restore_rng, save_checkpoint
from moalign.rl.evaluation import evaluate_policy
from moalign.rl.kl import exact_kl
from moalign.rl.policy import Policy
from moalign.rl.reward import MultiObjectiveReward
from moalign.rl.rewards_in_context import ScoreScale, target_prompt, targets_tokenizer
from moalign.rl.runs import (TrainResult, end_run, finish_run, interrupted, load_data, load_validation, record_start,
                             start_run)
from moalign.tracking import make_tracker


def supervised_examples(config, reward: MultiObjectiveReward):
    """(prompts, completions, whether each completion's sampling stopped by itself, the score scale
    of a Rewards-in-Context run or None, counts to log)."""
    from moalign.pool import read_pool

    from moalign.selection import ranked

    sup = config.supervised
    pool = read_pool(sup.pool)
    online = []
    for path in sup.online_pools:
        try:
            online.append(ranked(read_pool(path), config.reward))
        except MoalignError as exc:  # read_pool names its key; ranked does not
            said, own = str(exc), f"supervised.pool: {path} "
            raise MoalignError(f"supervised.online_pools: {path} {said[len(own):]}" if said.startswith(own)
                               else f"supervised.online_pools: {path}: {said}") from None
    start = _start_scale(config, reward)
    try:
        return _examples(config, reward, pool, online, start)
    except MoalignError as exc:
        raise MoalignError(f"supervised.pool: {sup.pool}: {exc}") from None


def _examples(config, reward, pool, online: list[pd.DataFrame], start: ScoreScale | None):
    from moalign.selection import ranked, top_k

    sup = config.supervised
    counts = {"pool/samples": len(pool), "pool/prompts": int(pool["prompt_index"].nunique())}
    scale = None
    if sup.select == "top_k":
        chosen = top_k(pool, config.reward, None, sup.top_k)
        prompts = chosen["prompt"].tolist()
    else:
        chosen = [_feasible(frame) for frame in [ranked(pool, config.reward)] + online]  # ranked: has every objective
        scale = start or _fit(reward, pd.concat(chosen))
        if online:  # RiC's multi-objective rejection sampling, within each source
            chosen = [_near_front(frame, reward, scale, sup.online_quantile) for frame in chosen]
            counts["examples/online"] = int(sum(len(frame) for frame in chosen[1:]))
        chosen = pd.concat(chosen, ignore_index=True)
        values = chosen[reward.names].to_numpy(dtype=float)
        prompts = [target_prompt(p, reward.names, s) for p, s in zip(chosen["prompt"], scale.state(values) if scale else [])]
    if not len(chosen):
        raise MoalignError(f"none of its {len(pool)} samples is feasible under "
                           f"{', '.join(config.reward.constraints)}: loosen the constraints or sample more per prompt")
    counts.update({"examples": len(chosen), "examples/prompts": int(chosen["prompt_index"].nunique())})
    # a pool from before `stopped` was recorded: every completion taken as ended
    stopped = chosen["stopped"].astype(bool).tolist() if "stopped" in chosen else [True] * len(chosen)
    return prompts, chosen["completion"].tolist(), stopped, scale, counts


def _feasible(scored: pd.DataFrame) -> pd.DataFrame:
    return scored[scored["feasible"] & np.isfinite(scored["score"])]


def _start_scale(config, reward) -> ScoreScale | None:
    """A Rewards-in-Context warm start's scale (`model.init_adapter`): its policy learnt what its
    statements mean, so a run continuing it (an online round) states scores on the same scale."""
    from moalign.rl.rewards_in_context import SCALE_FILE

    start = config.model.init_adapter
    if config.supervised.select != "rewards_in_context" or not start or not (Path(start) / SCALE_FILE).is_file():
        return None
    scale = ScoreScale.load(Path(start))
    if scale.names != list(reward.names):
        raise MoalignError(f"model.init_adapter: {start} states {', '.join(scale.names)}; this run weights "
                           f"{', '.join(reward.names)}")
    return scale


def _fit(reward, chosen: pd.DataFrame) -> ScoreScale | None:
    """A scale fitted to the samples; None without any (the caller says none is feasible)."""
    return ScoreScale.fit(chosen[reward.names].to_numpy(dtype=float), reward.names, reward.directions) if len(chosen) else None


def _near_front(chosen: pd.DataFrame, reward, scale: ScoreScale | None, quantile: float) -> pd.DataFrame:
    """The samples with at least one stated score at or above its `quantile` among `chosen` (RiC's
    `select_data_with_quantile`)."""
    if not len(chosen) or scale is None:
        return chosen
    stated = scale.state(chosen[reward.names].to_numpy(dtype=float))
    return chosen[(stated >= np.quantile(stated, quantile, axis=0)).any(axis=1)]


def batch_rows(n_examples: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The examples of `step` (1-based): epoch-wise shuffles, a pure function of its inputs."""
    per_epoch = math.ceil(n_examples / batch_size)
    epoch, j = divmod(step - 1, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)
    return order[j * batch_size:(j + 1) * batch_size].tolist()


def encode(tokenizer, prompts: list[str], completions: list[str], use_chat_template: bool, stopped=None):
    """(prompt ids, completion ids) per example, prompts formatted as generation formats them; a
    completion ends in EOS where its sampling stopped there (`stopped`, default all), not where
    it was cut at max_new_tokens: stopping mid-sentence is not what a fine-tune should teach."""
    templated = use_chat_template and bool(getattr(tokenizer, "chat_template", None))
    prompt_ids = [tokenizer(format_prompt(tokenizer, p, use_chat_template), add_special_tokens=not templated).input_ids
                  for p in prompts]
    stopped = [True] * len(completions) if stopped is None else list(stopped)
    completion_ids = [tokenizer(c, add_special_tokens=False).input_ids + ([tokenizer.eos_token_id] if end else [])
                      for c, end in zip(completions, stopped)]
    return prompt_ids, completion_ids


def completion_logits(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int, device):
    """(logits [B, T, V] predicting each completion token, its mask [B, T]): prompts left-padded,
    completions right-padded, positions following the mask, as in generation."""
    P, Pm = pad(prompt_ids, pad_id, left=True)
    C, Cm = pad(completion_ids, pad_id)
    ids, mask = torch.cat([P, C], 1).to(device), torch.cat([Pm, Cm], 1).to(device)
    T = C.shape[1]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=T + 1,
                   use_cache=False).logits[:, :-1]
    return logits, C.to(device), Cm.to(device).float()


def train_supervised(config, resume_run_id: str | None = None, parent_run_id: str | None = None,
                     tags: dict | None = None, tracker=None) -> TrainResult:
    """Fine-tune `config.model` on its pool's chosen samples; see the module docstring."""
    from moalign.rl.distributed import check_world_size

    started = time.perf_counter()
    check_world_size(config)  # one process: refused under a launcher
    sup = config.supervised
    _, eval_records = load_data(config)
    validation_records = load_validation(config)
    reward = MultiObjectiveReward(config.reward)
    extra = build_objectives(config.eval_objectives) if config.eval_objectives else {}
    eval_objectives = {**reward.all_objectives, **extra}
    prompts, completions, stopped, scale, counts = supervised_examples(config, reward)

    tracker = tracker or make_tracker(config.tracking.enabled, config.tracking.experiment, config.tracking.tracking_uri)
    resume_state = None
    if resume_run_id:
        resume_state = load_checkpoint_state(Path(config.output_dir) / resume_run_id / "checkpoint")
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    policy = Policy(config.model, adapter_dir=resume_state["adapter_dir"] if resume_state else None,
                    max_new_tokens=config.sampling.max_new_tokens)
    tokenizer = policy.tokenizer
    prompt_ids, completion_ids = encode(tokenizer, prompts, completions, config.model.use_chat_template, stopped)
    steps = config.supervised.epochs * math.ceil(len(prompts) / sup.batch_size)

    run_id, run_dir = start_run(tracker, config, resume_run_id, tags, parent_run_id)
    checkpoint_dir = run_dir / "checkpoint"
    logged_through = record_start(tracker, run_id, config, run_dir, eval_objectives, not resume_state, bool(resume_run_id))
    if not resume_state:
        tracker.log_metrics(run_id, [(0, {**counts, "steps_planned": steps})])

    optimizer = torch.optim.AdamW(policy.parameters(), lr=sup.lr or config.optim.lr, weight_decay=config.optim.weight_decay)
    warmup = config.optim.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    start_step, history = 0, []
    if resume_state:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        restore_rng(resume_state)
        start_step, history = resume_state["step"], resume_state["trainer"]["history"]
    state = {"dirty": False}
    last_checkpoint, pending = start_step, []

    def checkpoint(step: int) -> None:
        """Log the buffered steps, then checkpoint: MLflow never misses a step a checkpoint holds."""
        nonlocal last_checkpoint, logged_through
        tracker.log_metrics(run_id, [(s, m) for s, m in pending if s > logged_through])
        logged_through = max(logged_through, step)
        pending.clear()
        save_checkpoint(checkpoint_dir, policy, optimizer, scheduler, step, {"history": copy.deepcopy(history)})
        last_checkpoint = step

    rows_per_pass = max(1, config.optim.micro_batch_size)
    step = start_step
    bar = tqdm(range(start_step + 1, steps + 1), desc="fine-tune", disable=None if config.progress else True, initial=start_step, total=steps)
    try:
        policy.model.train()
        for step in bar:
            t0 = time.perf_counter()
            rows = batch_rows(len(prompts), sup.batch_size, step, config.seed)
            n_tokens = sum(len(completion_ids[i]) for i in rows)
            sums = {"loss": 0.0, "nll": 0.0, "kl": 0.0}
            seq_tokens = 0
            for start in range(0, len(rows), rows_per_pass):
                part = rows[start:start + rows_per_pass]
                with policy.autocast(config.optim.bf16):
                    logits, targets, mask = completion_logits(policy.model, [prompt_ids[i] for i in part],
                                                              [completion_ids[i] for i in part], tokenizer.pad_token_id,
                                                              policy.device)
                    logp, _ = gather_logprobs(logits, targets)
                    nll = -(logp * mask).sum() / n_tokens
                    loss = nll
                    if sup.kl_coef > 0:  # the reference in eval mode: no dropout noise in the anchor
                        policy.model.eval()
                        with torch.no_grad(), policy.as_reference() as reference:
                            ref_logits, _, _ = completion_logits(reference, [prompt_ids[i] for i in part],
                                                                 [completion_ids[i] for i in part],
                                                                 tokenizer.pad_token_id, policy.device)
                        policy.model.train()
                        kl = (exact_kl(logits, ref_logits) * mask).sum() / n_tokens
                        loss = loss + sup.kl_coef * kl
                        sums["kl"] += kl.item()
                loss.backward()
                sums["loss"] += loss.item()
                sums["nll"] += nll.item()
                seq_tokens += sum(len(prompt_ids[i]) + len(completion_ids[i]) for i in part)
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.optim.max_grad_norm)
            state["dirty"] = True
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if not math.isfinite(sums["loss"]):
                raise MoalignError(f"step {step}: loss is not finite; lower supervised.lr")
            step_time = time.perf_counter() - t0
            metrics = {**sums, "grad_norm": float(grad_norm), "lr": scheduler.get_last_lr()[0], "time/step": step_time,
                       "tokens/generated": 0, "tokens/trained": seq_tokens,
                       "tokens/forward": seq_tokens * (2 if sup.kl_coef > 0 else 1), "tokens_per_s": seq_tokens / step_time}
            history.append({"step": step, **metrics})
            pending.append((step, metrics))
            state["dirty"] = False
            bar.set_postfix(nll=f"{sums['nll']:.3f}")
            if step % config.checkpoint_every == 0 or step == steps:
                checkpoint(step)
        bar.close()
        adapter_dir = run_dir / "adapter"
        policy.save(adapter_dir)
        eval_tokenizer = tokenizer
        if scale is not None:  # told the targets of the run's own weights, as evaluation states them everywhere
            scale.save(adapter_dir)
            eval_tokenizer = targets_tokenizer(tokenizer, reward.names, scale.targets(reward.weights))
        t_eval, eval_counts = time.perf_counter(), {}
        scores, samples = evaluate_policy(policy.model, eval_tokenizer, eval_records, eval_objectives, config.sampling,
                                          config.model.use_chat_template, seed=config.seed, counter=eval_counts,
                                          progress=config.progress)
        validation = evaluate_policy(policy.model, eval_tokenizer, validation_records, eval_objectives, config.sampling,
                                     config.model.use_chat_template, seed=config.seed, counter=eval_counts,
                                     progress=config.progress)[0] if validation_records else None
        t_eval = time.perf_counter() - t_eval
    except KeyboardInterrupt:
        done = history[-1]["step"] if history else 0
        since = f"the checkpoint at step {last_checkpoint}" if last_checkpoint else "step 1 (no checkpoint yet)"
        if state["dirty"]:
            where = f"inside step {step}'s update; resume continues from {since}"
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
