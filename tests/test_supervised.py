"""Supervised fine-tuning on a sample pool (moalign/rl/supervised.py): it learns the chosen
completions (the completion tokens and their EOS, never the prompt), its KL term pulls a policy
that was moved away back towards the reference, and a run killed with SIGKILL resumes to the
uninterrupted run's adapter."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from moalign.rl.config import RewardConfig, SupervisedConfig, TrackingConfig
from moalign.rl.kl import exact_kl
from moalign.rl.policy import Policy
from moalign.rl.supervised import completion_logits, encode
from moalign.rl.trainer import train

from rl_helpers import PROMPTS, tiny_config, write_prompts

TESTS = Path(__file__).resolve().parent
CHOSEN, OTHER = "good good good", "bad bad"


def write_pool(path: Path) -> str:
    """Two scored samples a training prompt: the one `good` prefers, and another."""
    rows = []
    for i, prompt in enumerate(PROMPTS):
        for s, (text, score) in enumerate(((OTHER, 0.0), (CHOSEN, 1.0))):
            rows.append({"prompt_index": i, "sample": s, "prompt": prompt, "completion": text, "good": score})
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def sft_config(model, tmp: Path, uri: str | None = None, **supervised):
    tmp.mkdir(parents=True, exist_ok=True)
    return tiny_config(model, write_prompts(tmp / "prompts.jsonl"), tmp,
                       reward=RewardConfig(objectives={"good": {"type": "word_share"}}),
                       supervised=SupervisedConfig(enabled=True, pool=write_pool(tmp / "pool.parquet"),
                                                   **{"epochs": 3, "batch_size": 4, "lr": 0.02, **supervised}),
                       tracking=TrackingConfig(enabled=uri is not None, tracking_uri=uri, experiment="sft"),
                       checkpoint_every=2)


def completion_scores(model, tokenizer, completion: str, prompts=PROMPTS[:4]) -> tuple[float, float]:
    """(mean log-prob per completion token, mean exact KL to the reference there) of `completion` after `prompts`."""
    p_ids, c_ids = encode(tokenizer, prompts, [completion] * len(prompts), True)
    with torch.no_grad():
        logits, targets, mask = completion_logits(model.model, p_ids, c_ids, tokenizer.pad_token_id, "cpu")
        with model.as_reference() as reference:
            ref_logits, _, _ = completion_logits(reference, p_ids, c_ids, tokenizer.pad_token_id, "cpu")
    logp = torch.log_softmax(logits.float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    kl = exact_kl(logits, ref_logits)
    return float((logp * mask).sum() / mask.sum()), float((kl * mask).sum() / mask.sum())


def test_the_loss_covers_each_completion_and_its_eos_never_the_prompt(tiny_llama):
    policy = Policy(tiny_config(tiny_llama, "x", Path("/tmp")).model)
    tok = policy.tokenizer
    p_ids, c_ids = encode(tok, ["the cat sat", "a dog"], ["good good", "bad"], True)
    assert [c[-1] for c in c_ids] == [tok.eos_token_id] * 2 and [len(c) for c in c_ids] == [3, 2]
    logits, targets, mask = completion_logits(policy.model, p_ids, c_ids, tok.pad_token_id, "cpu")
    assert mask.sum(1).tolist() == [3, 2] and logits.shape[:2] == targets.shape == mask.shape
    assert targets[0, :3].tolist() == c_ids[0]  # the targets are the completion's tokens, in order
    # a completion cut at max_new_tokens did not stop there: no EOS to learn after it
    _, cut = encode(tok, ["the cat sat", "a dog"], ["good good", "bad"], True, stopped=[True, False])
    assert cut[0][-1] == tok.eos_token_id and tok.eos_token_id not in cut[1]


def test_fine_tuning_learns_the_chosen_samples_and_not_the_others(tiny_llama, tmp_path, one_torch_thread):
    cfg = sft_config(tiny_llama, tmp_path)
    before = Policy(cfg.model)
    result = train(cfg)
    after = Policy(cfg.model, adapter_dir=str(result.adapter_dir))
    chosen = completion_scores(after, after.tokenizer, CHOSEN)[0] - completion_scores(before, before.tokenizer, CHOSEN)[0]
    other = completion_scores(after, after.tokenizer, OTHER)[0] - completion_scores(before, before.tokenizer, OTHER)[0]
    assert chosen > 1.0 and chosen > other + 1.0  # nats per token: the kept sample, not the rejected one
    assert result.steps == 3 * 3 and len(result.history) == 9  # 10 prompts, top-1 each, batches of 4, 3 epochs
    assert result.cost["cost/trained_tokens"] > 0 and result.cost["cost/generated_tokens"] > 0  # evaluation generated
    assert (result.eval_samples["completion"].str.split().str[0] == "good").mean() >= 0.5  # greedy answers learnt it


def test_the_kl_term_pulls_a_moved_policy_back_towards_the_reference(tiny_llama, tmp_path, one_torch_thread):
    """From a policy first moved away by fine-tuning, the same continued fine-tuning with kl_coef > 0
    ends nearer the reference than without it, and nearer than where it started."""
    moved = train(sft_config(tiny_llama, tmp_path / "moved", epochs=4)).adapter_dir
    ends = {}
    for kl in (0.0, 3.0):
        cfg = sft_config(tiny_llama, tmp_path / f"kl{kl}", epochs=2, kl_coef=kl, lr=0.01)
        cfg.model.init_adapter = str(moved)
        result = train(cfg)
        policy = Policy(cfg.model, adapter_dir=str(result.adapter_dir))
        ends[kl] = completion_scores(policy, policy.tokenizer, CHOSEN)[1]
        if kl:
            assert result.history["kl"].iloc[-1] < result.history["kl"].iloc[0]  # logged, and falling
    start = Policy(cfg.model, adapter_dir=str(moved))
    start_kl = completion_scores(start, start.tokenizer, CHOSEN)[1]
    assert start_kl > 0.05  # moved away: the test has work to do
    assert ends[3.0] < 0.7 * ends[0.0] and ends[3.0] < 0.7 * start_kl, (start_kl, ends)


KILLED = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    import test_supervised
    from moalign.rl import supervised

    saved = []
    original = supervised.save_checkpoint

    def save_then_die(*args, **kwargs):
        original(*args, **kwargs)
        saved.append(args[4])
        if len(saved) == 2:  # the second checkpoint is whole: now the machine goes away
            os.kill(os.getpid(), 9)

    supervised.save_checkpoint = save_then_die
    supervised.train_supervised(test_supervised.sft_config({model!r}, Path({tmp!r}), {uri!r}))
""")


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_adapter(tiny_llama, tmp_path, one_torch_thread):
    killed_dir, whole_dir = tmp_path / "killed", tmp_path / "whole"
    killed_dir.mkdir()
    uri = f"sqlite:///{killed_dir / 'mlflow.db'}"
    script = KILLED.format(tests=str(TESTS), model=tiny_llama, tmp=str(killed_dir), uri=uri)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("sft").experiment_id])
    assert run.info.status == "RUNNING"  # killed: nobody marked it
    cfg = sft_config(tiny_llama, killed_dir, uri)
    resumed = train(cfg, resume_run_id=run.info.run_id)
    whole = train(sft_config(tiny_llama, whole_dir, f"sqlite:///{whole_dir / 'mlflow.db'}"))
    a, b = load_file(resumed.adapter_dir / "adapter_model.safetensors"), load_file(whole.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resumed.history["nll"], whole.history["nll"], rtol=1e-5)
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in losses) == list(range(1, resumed.steps + 1))  # every step logged once
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert json.loads(json.dumps(resumed.eval_scores)) == pytest.approx(whole.eval_scores)
