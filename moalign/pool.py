"""A pool of scored samples: n completions for every prompt of a split, sampled from one policy
and scored by every objective a search names. It is the costly step of every sample-score-select
method (best-of-n, rejection-sampling fine-tuning, Rewards-in-Context) and does not depend on the
weights, so a search samples it once and every weight vector, every later search and every later
run with the same `pool_hash` reads it back (`moalign.pareto.children.Children.pool`).

The pool is built in parts of `CHUNK` prompts, each sampled with a seed of its own (pool seed,
part) and written whole (a temporary file renamed), so a pool killed at any moment (kill -9
included) continues from its last whole part and ends with the samples an uninterrupted build
draws. The finished table is `pool.parquet`: `prompt_index` (the prompt's place in its split),
`sample`, `prompt`, `completion`, `completion_tokens`, `sequence_tokens`, `stopped` and one column
per objective; a pool that asked a Rewards-in-Context policy for targets (`PoolSpec.ask`, its online
augmentation) also `asked`, the weight vector each prompt was asked for (its `prompt` stays the
plain one: a fine-tune states the scores each sample got).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from moalign.errors import MoalignError

CHUNK = 8  # prompts per part file: the granularity of resume
TABLE = "pool.parquet"
SPLITS = ("train", "eval")
_PART = re.compile(r"^part-(\d{6})\.parquet$")


@dataclass(frozen=True)
class PoolSpec:
    """What a pool samples: `n` completions of each prompt of `split`, from the base model or an adapter."""

    split: str = "train"  # train: the training prompts (to fine-tune on) | eval: the held-out ones (best-of-n)
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    adapter: str | None = None  # sample from this adapter folder (a trained run's); None: the base model
    # Rewards-in-Context's online augmentation: weight vectors ("w1,w2;w1,w2;..."), prompt i asked for
    # the targets the adapter's score scale gives vector i mod K; "" asks for nothing
    ask: str = ""

    def fields(self) -> dict:
        """Its settings as pools log and hash them (`ask` only where set, as pools had it before)."""
        data = asdict(self)
        if not data["ask"]:
            del data["ask"]
        return data

    def asked(self) -> list[tuple[float, ...]]:
        return [tuple(float(x) for x in w.split(",")) for w in self.ask.split(";")] if self.ask else []


def records_digest(records: list[dict]) -> str:
    """One hash of what objectives read of each record (prompt, references, source), in order:
    a pool scored against other references (or sources) is another pool."""
    fields = [[r.get("prompt"), r.get("references"), r.get("source")] for r in records]
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def pool_hash(train_cfg, spec: PoolSpec, objectives: dict, records: list[dict]) -> str:
    """Same model (and adapter, by its content), records, sampling settings and objectives: the
    same pool, wherever it was made."""
    from moalign.integrity import folder_sha256

    model = train_cfg.model
    adapter = folder_sha256(spec.adapter) if spec.adapter and Path(spec.adapter).is_dir() else spec.adapter
    data = {"model": [model.name, model.dtype, model.use_chat_template, model.attn_implementation],
            "spec": {**spec.fields(), "adapter": adapter}, "max_new_tokens": train_cfg.sampling.max_new_tokens,
            "objectives": {n: [type(o).__name__, o.get_params()] for n, o in sorted(objectives.items())},
            "records": records_digest(records)}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def matches(run, path: str | Path, spec: PoolSpec, records: list[dict], objectives: dict) -> bool:
    """Whether a finished pool run (its table at `path`, already checked against its logged hash)
    is the pool its `pool_hash` tag claims for this search: its logged sampling settings are
    `spec`'s, its table's prompts are `records`' in order, and it scored every objective. A tag is
    anyone's to write; this is what a reusing search checks."""
    from moalign.tracking import flatten

    logged = run.data.params
    if any(logged.get(f"pool.{k}") != v for k, v in flatten(spec.fields()).items() if k != "adapter"):
        return False
    if logged.get("pool.records") not in (None, records_digest(records)):
        return False
    try:
        table = pd.read_parquet(path)
    except Exception:  # unreadable: no pool at all
        return False
    prompts = table.groupby("prompt_index", sort=True)["prompt"].first().tolist()
    return prompts == [r["prompt"] for r in records] and all(n in table.columns for n in objectives)


def _parts(work: Path) -> dict[int, Path]:
    return {int(m.group(1)): p for p in work.glob("part-*.parquet") if (m := _PART.match(p.name))} if work.is_dir() else {}


def _write(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _load_policy(train_cfg, adapter: str | None):
    from moalign.models import apply_weights, load_causal_lm, load_tokenizer

    model_cfg = train_cfg.model
    tokenizer = load_tokenizer(model_cfg.name, model_cfg.trust_remote_code)
    tokenizer.padding_side = "left"
    model = load_causal_lm(model_cfg.name, model_cfg.dtype, None, model_cfg.trust_remote_code, model_cfg.attn_implementation)
    if adapter:
        model = apply_weights(model, model_cfg, Path(adapter))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def build_pool(train_cfg, spec: PoolSpec, records: list[dict], objectives: dict, work: Path,
               progress: bool = True) -> pd.DataFrame:
    """The pool's table, sampled and scored part by part into `work` (continuing from the parts
    already there), then read back whole; see the module docstring."""
    from tqdm.auto import tqdm

    from moalign.rl.trainer import step_seed

    work.mkdir(parents=True, exist_ok=True)
    n_parts = -(-len(records) // CHUNK)
    done = _parts(work)
    todo = [k for k in range(n_parts) if k not in done]
    if todo:
        model, tokenizer = _load_policy(train_cfg, spec.adapter)
        asked = _asking(tokenizer, spec)
        with tqdm(total=len(records), initial=len(records) - sum(len(records[k * CHUNK:(k + 1) * CHUNK]) for k in todo),
                  desc=f"pool ({spec.split}, n={spec.n})", unit="prompt", disable=None if progress else True) as bar:
            for k in todo:
                rows = list(range(k * CHUNK, min((k + 1) * CHUNK, len(records))))
                if not asked:
                    part = _sample(model, tokenizer, train_cfg, spec, records, rows, step_seed(spec.seed, k + 1), objectives)
                else:  # each prompt asked for its vector's targets, one batch per vector
                    part = pd.concat([_sample(model, asking, train_cfg, spec, records, [i for i in rows if i % len(asked) == j],
                                              step_seed(step_seed(spec.seed, k + 1), j), objectives).assign(asked=key)
                                      for j, (key, asking) in enumerate(asked) if any(i % len(asked) == j for i in rows)])
                    part = part.sort_values(["prompt_index", "sample"], kind="stable").reset_index(drop=True)
                _write(part, work / f"part-{k:06d}.parquet")
                bar.update(len(rows))
        done = _parts(work)
    return pd.concat([pd.read_parquet(done[k]) for k in range(n_parts)], ignore_index=True)


def _asking(tokenizer, spec: PoolSpec) -> list[tuple[str, object]]:
    """[(weights key, a tokenizer stating that vector's targets)] for `spec.ask`, through the score
    scale the adapter was trained with; [] when the pool asks for nothing."""
    if not spec.ask:
        return []
    from moalign.rl.rewards_in_context import ScoreScale, targets_tokenizer

    if not spec.adapter or not (Path(spec.adapter) / "rewards_in_context.json").is_file():
        raise MoalignError(f"pool.ask: {spec.adapter} is no Rewards-in-Context adapter (it has no score scale to "
                           f"state targets with)")
    scale = ScoreScale.load(Path(spec.adapter))
    out = []
    for w in spec.asked():
        if len(w) != len(scale.names):
            raise MoalignError(f"pool.ask: {w} has {len(w)} weights; the adapter states {len(scale.names)} "
                               f"objectives ({', '.join(scale.names)})")
        out.append((",".join(f"{x:.4f}" for x in w), targets_tokenizer(tokenizer, scale.names, scale.targets(w))))
    return out


def _sample(model, tokenizer, train_cfg, spec: PoolSpec, records, rows: list[int], seed: int, objectives) -> pd.DataFrame:
    """`spec.n` scored samples of each of `records[rows]`, one table row a sample."""
    import torch

    from moalign.rl.evaluation import batch_for
    from moalign.rl.sampling import generate
    from moalign.scoring import score

    t0 = time.perf_counter()
    rollout = generate(model, tokenizer, [records[i]["prompt"] for i in rows], spec.n, train_cfg.sampling.max_new_tokens,
                       spec.temperature, 0, spec.top_p, train_cfg.model.use_chat_template, seed=seed)
    index = [rows[i] for i in rollout.prompt_index]
    scores = score(batch_for(records, index, rollout.texts, groups=index), objectives)
    part = pd.DataFrame({"prompt_index": index, "sample": [i % spec.n for i in range(len(index))],
                         "prompt": [records[i]["prompt"] for i in index], "completion": rollout.texts,
                         "completion_tokens": rollout.completion_mask.sum(1).tolist(),
                         # ended by its own EOS, not cut at max_new_tokens
                         "stopped": (rollout.input_ids[:, -rollout.n_completion:][
                             torch.arange(len(index)), (rollout.completion_mask.sum(1) - 1).clamp(min=0)]
                             == tokenizer.eos_token_id).tolist(),
                         "sequence_tokens": rollout.attention_mask.sum(1).tolist(),
                         "seconds": (time.perf_counter() - t0) / len(index)})
    return pd.concat([part, scores.reset_index(drop=True)], axis=1)


def pool_cost(frame: pd.DataFrame) -> dict:
    """The pool's `cost/...` metrics: its sampled tokens, the forward tokens of sampling them (each
    sequence's prompt and completion tokens, as evaluation counts them) and the time spent."""
    return {"cost/train_steps": 0, "cost/generated_tokens": int(frame["completion_tokens"].sum()),
            "cost/forward_tokens": int(frame["sequence_tokens"].sum()), "cost/trained_tokens": 0,
            "cost/wall_time_s": float(frame["seconds"].sum())}


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(frame, path)
    return path


def read_pool(path: str | Path) -> pd.DataFrame:
    """A pool table, or one line saying why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise MoalignError(f"supervised.pool: {path} is not a file (a pool run's {TABLE})")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises its own error types for a file that is not Parquet
        raise MoalignError(f"supervised.pool: {path} is not a pool table ({exc})".splitlines()[0]) from None
    missing = [c for c in ("prompt_index", "prompt", "completion") if c not in frame.columns]
    if missing:
        raise MoalignError(f"supervised.pool: {path} has no column {missing[0]!r}: not a pool table")
    return frame
