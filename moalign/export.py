"""A policy as a plain Hugging Face checkpoint (`moalign export`): the adapter, or a soup's mix of
its endpoints, merged into the base model's weights, so that `AutoModelForCausalLM.from_pretrained`
loads it with neither peft nor moalign installed; plus its tokenizer and a model card that says
what the policy was trained for and how it scored.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from moalign.errors import MoalignError
from moalign.models import BUNDLED
from moalign.policies import PolicyRecord, build_policy, check_remote_code, find_policy

# the bundled GGUF's own model on the hub: what a model card's `base_model` can link to
BUNDLED_SOURCE = "HuggingFaceTB/SmolLM2-135M-Instruct"
SAMPLES = "eval_samples.json"


def eval_samples(record: PolicyRecord) -> pd.DataFrame | None:
    """The policy's held-out samples with their scores (its run's `eval_samples.json`), if it has a run."""
    from moalign.tracking import MlflowTracker

    if record.run_id is None:
        return None
    return MlflowTracker(None, record.tracking_uri).read_table(record.run_id, SAMPLES)


def reward_objectives(record: PolicyRecord, samples: pd.DataFrame | None) -> list[str]:
    """The reward's objectives in the order its weights follow. A run's config.yaml is stored with
    sorted keys (MLflow's `log_dict`), which loses that order; the evaluation samples keep it
    (the reward's objectives are their first score columns)."""
    names = list(record.config.reward.objectives)
    scored = [c for c in (samples.columns if samples is not None else ()) if c in names]
    return scored if sorted(scored) == sorted(names) else names


def evaluation(record: PolicyRecord, samples: pd.DataFrame | None) -> pd.DataFrame | None:
    """One row an objective the policy was scored with: direction, mean, std, 95% bootstrap interval
    over prompts clipped to the objective's bounds, n prompts (see `moalign.scoring.summarize`)."""
    from moalign.registry import build_objectives
    from moalign.scoring import summarize

    if samples is None or record.config is None:
        return None
    spec = {**record.config.reward.objectives, **record.config.eval_objectives}
    objectives = build_objectives({c: spec[c] for c in samples.columns if c in spec})
    table = summarize(samples[list(objectives)].astype(float), objectives, prompts=samples["prompt"])
    table.insert(0, "direction", [objectives[c].direction for c in table.index])
    return table


def _base_name(name: str) -> str:
    return f"`{name}` (moalign's bundled Q4_1 GGUF of {BUNDLED_SOURCE}, dequantised)" if name == BUNDLED else f"`{name}`"


def _policy_line(record: PolicyRecord) -> str:
    weights = ", ".join(f"{w:g}" for w in record.weights or [])
    if record.role == "soup":
        endpoints = ", ".join(f"`{s}`" for s in record.sources)
        return f"rewarded soup: the endpoint runs {endpoints} (one per objective) mixed with weights {weights}"
    if record.role == "base":
        return "the base model, not fine-tuned (the search's reference)"
    if record.role == "conditioned":
        return (f"weight-conditioned: one RL run for every weight vector, here given weights {weights}, which the "
                "tokenizer's chat template states before each user message (`[weights: ...]`), as in training")
    if record.role == "rewards_in_context":
        return (f"Rewards-in-Context: one supervised run on scored samples for every weight vector, here weights "
                f"{weights}, whose target scores the tokenizer's chat template states before each user message "
                "(`[targets: ...]`), as in training")
    if record.role == "rejection":
        return ("rejection-sampling fine-tuning: LoRA fine-tuned on the best feasible of several samples per training "
                "prompt under its weights (adapter merged)")
    return "fine-tuned with RL (LoRA adapter merged)" if record.model.lora else "fine-tuned with RL (all weights)"


def _training_rows(record: PolicyRecord, names: list[str]) -> list[tuple[str, str]]:
    cfg = record.config
    if record.role == "base":
        return [("objectives", ", ".join(names))]
    weights = record.weights if record.weights is not None else [1.0 / len(names)] * len(names)
    reward = ", ".join(f"{n} {w:g}" for n, w in zip(names, weights))
    if record.role == "soup":
        reward += " (mixing weights; each endpoint trained on its objective alone)"
    algo, optim = cfg.algorithm, cfg.optim
    kl = f"KL {algo.kl_coef:g} ({algo.kl_estimator}, {'in the reward' if algo.kl_in_reward else 'in the loss'})"
    sup = cfg.supervised
    if sup.enabled:  # fine-tuned on a sample pool, not RL
        chosen = f"each prompt's {sup.top_k} best feasible samples" if sup.select == "top_k" else \
            "every feasible sample, its scores stated in its prompt"
        kl = f", KL {sup.kl_coef:g} to the reference (exact, per token)" if sup.kl_coef else ""
        algo_row = (f"supervised fine-tuning on a pool of scored samples (`{sup.pool}`): {chosen}; {sup.epochs} epochs "
                    f"of batches of {sup.batch_size}, lr {sup.lr or optim.lr:g}{kl}")
        steps_row = f"{sup.epochs} epochs"
    else:
        algo_row = f"{algo.name}, {kl}"
        steps_row = f"{optim.steps}{' per endpoint' if record.role == 'soup' else ''}, lr {optim.lr:g}, " \
                    f"{cfg.sampling.prompts_per_step} prompts x {cfg.sampling.num_generations} samples a step"
    lora = f", LoRA r={cfg.model.lora_r} alpha={cfg.model.lora_alpha:g}" if cfg.model.lora else ", full fine-tuning"
    held_out = f"`{cfg.data.eval}`" if cfg.data.eval else f"{cfg.data.eval_fraction:g} of it, split seed {cfg.data.split_seed}"
    return [
        ("reward weights", reward),
        ("scalarizer", f"{cfg.reward.scalarizer}, {cfg.reward.normalization} normalization"),
        ("constraints", ", ".join(cfg.reward.constraints) or "none"),
        ("algorithm", algo_row),
        ("steps", f"{steps_row}{lora}"),
        ("training data", f"`{cfg.data.train}` (held out for evaluation: {held_out})"),
        ("seed", str(cfg.seed)),
    ]


def model_card(record: PolicyRecord, samples: pd.DataFrame | None = None) -> str:
    """README.md with Hugging Face model-card metadata: what the policy is, what it was trained
    for, how it scored on the held-out prompts (`samples`: see `eval_samples`)."""
    from huggingface_hub import ModelCard, ModelCardData

    scores = evaluation(record, samples)
    name = record.model.name
    tags = ["moalign", "multi-objective", "pareto-front", {
        "soup": "rewarded-soups", "base": "base-model", "conditioned": "weight-conditioned",
        "rejection": "rejection-sampling", "rewards_in_context": "rewards-in-context"}.get(record.role, "rl")]
    if record.config is not None and record.role != "base":
        tags.append("sft" if record.config.supervised.enabled else record.config.algorithm.name)
    data = ModelCardData(base_model=BUNDLED_SOURCE if name == BUNDLED else name, library_name="transformers",
                         pipeline_tag="text-generation", tags=tags)
    rows = [("base model", _base_name(name)), ("policy", _policy_line(record))]
    if record.run_id:
        rows.append(("MLflow run", f"`{record.run_id}`"))
    if record.config is not None:
        rows += _training_rows(record, reward_objectives(record, samples))
    lines = [f"# moalign policy: {record.role}" + (f" {', '.join(f'{w:g}' for w in record.weights)}" if record.weights else ""),
             "", "A policy from a moalign multi-objective search, as a plain transformers checkpoint "
             "(any adapter is merged into the weights).", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    if scores is not None:
        s = record.config.sampling
        how = "greedy" if s.eval_temperature == 0 else f"temperature {s.eval_temperature:g}"
        lines += ["", "## Evaluation", "",
                  f"On {int(scores['n'].max())} held-out samples ({s.eval_num_generations} a prompt, {how}, up to "
                  f"{s.max_new_tokens} new tokens): mean and 95% percentile bootstrap interval over prompts (the "
                  f"completions of one prompt averaged first), clipped to each objective's bounds.",
                  "", "| objective | direction | mean | 95% interval | prompts |", "|---|---|---:|---|---:|"]
        lines += [f"| {o} | {r['direction']} | {r['mean']:.4g} | [{r['ci95_low']:.4g}, {r['ci95_high']:.4g}] | {int(r['n'])} |"
                  for o, r in scores.iterrows()]
    lines += ["", "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
              'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")  # pads on the left', "```", ""]
    if record.model.use_chat_template:
        lines += ["Trained and evaluated on prompts formatted as one user turn by the tokenizer's chat template "
                  "(`apply_chat_template(..., add_generation_prompt=True)`), where it has one.", ""]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def export_policy(ref: str, out: str | Path, tracking_uri: str | None = None, device: str | None = None,
                  trust_remote_code: bool = False) -> Path:
    """Write policy `ref` (see `moalign.load_policy`) to the new folder `out`: merged weights,
    tokenizer, README.md. Written beside `out` under a temporary name and renamed when whole;
    an existing non-empty `out` is refused."""
    from moalign.data import check_writable

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MoalignError(f"{out}: exists and is not an empty folder; export into a new one")
    check_writable(out, directory=True)
    record = find_policy(ref, tracking_uri)
    check_exportable(record, ref)
    check_remote_code(record, trust_remote_code)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_checkpoint(record, tmp, device, trust_remote_code)
        os.replace(tmp, out)  # replaces an empty folder too
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_exportable(record: PolicyRecord, ref: str) -> None:
    """A decoding-time mix is no single set of weights (it runs its endpoints side by side at every
    token), so it cannot be one checkpoint; refused before any model loads."""
    if record.role == "mix":
        raise MoalignError(f"{ref}: a decoding-time mix runs its {len(record.sources or ())} endpoints side by side at "
                           "every token and has no single set of weights to export; export or register an endpoint, "
                           "or the soup at the same weights, or generate with it (moalign generate)")
    if record.role == "best_of_n":
        raise MoalignError(f"{ref}: a best-of-n policy is the base model sampling several answers and choosing one, "
                           "no weights of its own to export; export the base model (EXPERIMENT/SEARCH@base), or "
                           "generate with it (moalign generate)")


def save_checkpoint(record: PolicyRecord, directory: Path, device: str | None = None, trust_remote_code: bool = False) -> None:
    """Merged weights, tokenizer and model card of `record` into `directory`."""
    card = model_card(record, eval_samples(record))  # MLflow first: a failure there loads no model
    model, tokenizer = build_policy(record, device, trust_remote_code=trust_remote_code)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    # transformers saves the padding side only when it was given at load time: recorded here, so
    # that batched generation with the plain tokenizer continues each prompt from its last token
    settings = Path(directory) / "tokenizer_config.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text(encoding="utf-8")), "padding_side": "left"}, indent=2),
                        encoding="utf-8")
    (Path(directory) / "README.md").write_text(card, encoding="utf-8")
