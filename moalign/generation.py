"""Completions of a policy for a file of prompts (`moalign generate`), sampled as training's
held-out evaluation samples them unless overridden, so that by default a policy answers new
prompts the way its front scores were measured."""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from moalign.errors import ConfigError, MoalignError
from moalign.rl.config import SamplingConfig

# the settings of held-out evaluation: what `generate` reads from SamplingConfig
USED = ("eval_num_generations", "eval_temperature", "max_new_tokens", "top_k", "top_p")
SUFFIXES = (".jsonl", ".json", ".ndjson")  # what `moalign evaluate --data` reads back


def sampling_settings(base: SamplingConfig, overrides: list[str]) -> SamplingConfig:
    """`base` with `sampling.KEY=VALUE` overrides, validated by SamplingConfig.

    >>> sampling_settings(SamplingConfig(), ["sampling.eval_temperature=0.7"]).eval_temperature
    0.7
    """
    from moalign.config import apply_overrides, from_dict

    for item in overrides:
        key = item.partition("=")[0].strip()
        if not key.startswith("sampling.") or key.removeprefix("sampling.") not in USED:
            raise ConfigError(f"--set {item!r}: generate takes sampling.KEY=VALUE with KEY one of {', '.join(USED)}")
    data = {"sampling": asdict(base)}
    apply_overrides(data, overrides)
    return from_dict(SamplingConfig, data["sampling"], "sampling")


def generate_rows(model, tokenizer, records: list[dict], sampling: SamplingConfig, use_chat_template: bool = True,
                  seed: int = 0, batch_prompts: int = 16, progress: bool = True) -> list[dict]:
    """One row a prompt and generation: the input record's fields, `generation` (0-based) and
    `completion`. Seeded per batch as held-out evaluation is (`moalign.rl.evaluation`)."""
    from moalign.pareto.best_of_n import BestOfN
    from moalign.rl.sampling import generate

    rows = []
    model.eval()
    if isinstance(model, BestOfN):  # n samples a prompt, one answer kept: one row a prompt
        texts = model.answer(records, sampling.max_new_tokens, use_chat_template, seed)
        return [{**{k: v for k, v in r.items() if v is not None}, "generation": 0, "completion": t}
                for r, t in zip(records, texts)]
    with tqdm(total=len(records), desc="generate", unit="prompt", disable=None if progress else True) as bar:
        for start in range(0, len(records), batch_prompts):
            chunk = records[start : start + batch_prompts]
            rollout = generate(model, tokenizer, [r["prompt"] for r in chunk], sampling.eval_num_generations,
                               sampling.max_new_tokens, sampling.eval_temperature, sampling.top_k, sampling.top_p,
                               use_chat_template, seed=seed + start)
            for row, (i, text) in enumerate(zip(rollout.prompt_index, rollout.texts)):
                record = {k: v for k, v in chunk[i].items() if v is not None}
                rows.append({**record, "generation": row % sampling.eval_num_generations, "completion": text})
            bar.update(len(chunk))
    return rows


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    """Atomically: a failed or interrupted write leaves no partial file."""
    from moalign.data import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def check_output(path: str | Path) -> Path:
    from moalign.data import check_writable

    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise MoalignError(f"{path}: output must end in {' or '.join(SUFFIXES)} (JSON lines)")
    return check_writable(path)


def parse_targets(text: str, record) -> list[float]:
    """`--targets chrf=1.2,verbosity=-0.3`: one stated score per objective of a Rewards-in-Context
    policy, in its objectives' order; anything else is one ConfigError line."""
    if record.role != "rewards_in_context":
        raise ConfigError(f"--targets: only a Rewards-in-Context policy is told target scores; this one is {record.role!r}")
    names = list(record.config.reward.objectives)
    given = {}
    for item in str(text).split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--targets {text!r}: expected OBJECTIVE=SCORE,... (objectives: {', '.join(names)})")
        if name not in names:
            raise ConfigError(f"--targets: unknown objective {name!r} (the policy's: {', '.join(names)})")
        try:
            given[name] = float(value)
        except ValueError:
            raise ConfigError(f"--targets: {name}={value!r} is not a number") from None
        if not math.isfinite(given[name]):
            raise ConfigError(f"--targets: {name}={value!r} is not a finite number")
    missing = [n for n in names if n not in given]
    if missing:
        raise ConfigError(f"--targets: no score for {missing[0]!r} (give one for each of {', '.join(names)})")
    return [given[n] for n in names]


def generate_file(ref: str, data: str | Path, out: str | Path, overrides: list[str] = (), seed: int = 0,
                  tracking_uri: str | None = None, progress: bool = True, targets: str | None = None,
                  trust_remote_code: bool = False) -> int:
    """Write the completions of policy `ref` (see `moalign.load_policy`) for the prompts in `data`
    to `out`; returns the number of rows. Everything about the input is checked before the model
    loads, and nothing is written unless generation completes. `targets`: for a Rewards-in-Context
    policy, the stated scores to ask for (`parse_targets`) instead of those of its weights."""
    from moalign.data import load_prompt_records
    from moalign.policies import build_policy, check_remote_code, find_policy

    sampling_settings(SamplingConfig(), overrides)  # the keys, before anything is read
    check_output(out)
    records = load_prompt_records(data)
    record = find_policy(ref, tracking_uri)
    check_remote_code(record, trust_remote_code)
    asked = parse_targets(targets, record) if targets is not None else None
    sampling = sampling_settings(record.config.sampling if record.config else SamplingConfig(), overrides)
    from moalign.models import check_context, model_config

    check_context(model_config(record.model.name, trust_remote_code), sampling.max_new_tokens)  # before any weights load
    model, tokenizer = build_policy(record, targets=asked, trust_remote_code=trust_remote_code)
    rows = generate_rows(model, tokenizer, records, sampling, record.model.use_chat_template, seed, progress=progress)
    write_jsonl(rows, out)
    return len(rows)
