"""What every training run shares, RL (`trainer.py`) or supervised (`supervised.py`): its data,
its MLflow run opened or resumed, and its end (held-out scores, cost, samples, adapter).

A run's record is the same whichever way it trained, so searches, reports, `load_policy` and
`export` read both alike: params and `config.yaml` at the start, `eval/<objective>` and `cost/...`
metrics, `eval_samples.json` and the `adapter` artifact at the end.
"""
from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import yaml

from moalign.data import load_prompt_records, train_eval_split
from moalign.errors import MoalignError
from moalign.tracking import flatten


CONFIG_FILE = "moalign_config.yaml"  # a run's config, saved in its adapter folder


@dataclass
class TrainResult:
    run_id: str | None
    run_dir: Path
    adapter_dir: Path
    steps: int
    eval_scores: dict
    history: pd.DataFrame
    eval_samples: pd.DataFrame
    wall_time: float
    cost: dict | None = None  # the run's cost/... metrics (see `cost_of`)
    validation_scores: dict | None = None  # {"val/<objective>": mean} on the validation split, if any


def load_data(config):
    """(training records, held-out records): `data.eval`, or a seeded split of `data.train`; the
    training records without the validation split (`load_validation`)."""
    return _splits(config)[:2]


def load_validation(config) -> list[dict]:
    """The validation split (`data.validation_fraction` of the training prompts, seeded by
    `data.split_seed`), up to `data.max_eval_prompts`; [] without one."""
    return _splits(config)[2]


def _splits(config) -> tuple[list[dict], list[dict], list[dict]]:
    data = config.data
    records = load_prompt_records(data.train)
    if data.eval:
        train_records, eval_records = records, load_prompt_records(data.eval)
    else:
        train_records, eval_records = train_eval_split(records, data.eval_fraction, data.split_seed)
    validation = []
    if data.validation_fraction > 0:
        # another seed than the held-out split's: the two draws are independent
        train_records, validation = train_eval_split(train_records, data.validation_fraction, data.split_seed + 1,
                                                     "data.validation_fraction")
    return train_records, eval_records[: data.max_eval_prompts], validation[: data.max_eval_prompts]


def cost_of(history: list[dict], eval_counts: dict, eval_time: float) -> dict:
    """A run's cost over all its recorded steps (resumes included) and its final evaluation.

    Tokens are counted per sequence: a pass over a batch counts each sample's non-padding prompt
    and completion tokens, a prompt shared by a group (prefix sharing) once per sample, so the count
    does not depend on such optimisations. `forward_tokens` counts every forward pass (sampling,
    reference, policy, evaluation), `trained_tokens` those of them that also ran backward. Wall
    time is steps and evaluation, not model loading.
    """
    # .get: a run resumed from a checkpoint written before tokens were counted
    return {"cost/train_steps": len(history),
            "cost/generated_tokens": int(sum(h.get("tokens/generated", 0) for h in history)
                                         + eval_counts.get("generated_tokens", 0)),
            "cost/forward_tokens": int(sum(h.get("tokens/forward", 0) for h in history)
                                       + eval_counts.get("forward_tokens", 0)),
            "cost/trained_tokens": int(sum(h.get("tokens/trained", 0) for h in history)),
            "cost/wall_time_s": float(sum(h["time/step"] for h in history)) + eval_time}


def end_run(tracker, run_id, status: str) -> None:
    """Mark the run ended. When the tracking server is what failed this fails too (within the
    tracker's bounded retries): the original error is the one to report, so this one is dropped."""
    try:
        tracker.end_run(run_id, status)
    except MoalignError:
        pass


def interrupted(tracker, run_id, parent_run_id, where: str) -> None:
    """Ctrl-C or SIGTERM: the run marked KILLED and one line saying where it stopped and how to go on."""
    import sys

    end_run(tracker, run_id, "KILLED")
    how = "re-run the same search or pipeline" if parent_run_id else f"moalign train --resume {run_id}"
    print(f"\ninterrupted {where}; run marked KILLED. Continue with: {how}", file=sys.stderr)


def start_run(tracker, config, resume_run_id: str | None, tags: dict | None, parent_run_id: str | None):
    """(run id, run folder): run `resume_run_id` marked running again, or a new run."""
    if resume_run_id:
        tracker.resume_run(resume_run_id)
        return resume_run_id, Path(config.output_dir) / resume_run_id
    run_id = tracker.start_run(config.tracking.run_name, tags, parent_run_id)
    return run_id, Path(config.output_dir) / (run_id or f"untracked-{uuid.uuid4().hex[:12]}")


def record_start(tracker, run_id, config, run_dir: Path, objectives: dict, fresh: bool, resumed: bool) -> int:
    """Log the config (a fresh run, or one stopped before its first checkpoint: the same values
    again) and return the last step MLflow already holds: steps logged just before a checkpoint
    that did not complete are not logged again. The run is marked FAILED if this fails."""
    try:
        if fresh:
            params = flatten({**asdict(config), "objective_params": {n: o.get_params() for n, o in objectives.items()}})
            if resumed:  # stopped before its first checkpoint: what it logged then stays (MLflow never changes a param)
                logged = getattr(tracker.get_run(run_id), "data", None)
                params = {k: v for k, v in params.items() if k not in (logged.params if logged else {})}
            tracker.log_params(run_id, params)
            tracker.log_dict(run_id, asdict(config), "config.yaml")
            tracker.set_tags(run_id, {"moalign.checkpoint_dir": str((run_dir / "checkpoint").resolve()),
                                      "moalign.kind": "train"})
        return (tracker.last_step(run_id, "loss") or 0) if resumed else 0
    except BaseException:
        end_run(tracker, run_id, "FAILED")
        raise


def finish_run(tracker, run_id, config, run_dir: Path, scores: pd.DataFrame, samples: pd.DataFrame,
               history: list[dict], eval_counts: dict, eval_time: float, started: float,
               validation: pd.DataFrame | None = None) -> TrainResult:
    """Log the held-out evaluation (and the validation split's mean scores, `val/<objective>`),
    the cost, the samples and the adapter; end the run FINISHED and drop the checkpoint (only an
    unfinished run needs it; the adapter stays)."""
    steps = len(history) and int(history[-1]["step"])
    eval_scores = {name: float(scores[name].mean()) for name in scores.columns}
    val_scores = {f"val/{name}": float(validation[name].mean()) for name in validation.columns} \
        if validation is not None else {}
    wall_time = time.perf_counter() - started
    cost = cost_of(history, eval_counts, eval_time)
    tracker.log_metrics(run_id, [(steps, {**{f"eval/{k}": v for k, v in eval_scores.items()}, **val_scores,
                                          "train_wall_time_s": wall_time, **cost})])
    tracker.log_table(run_id, samples, "eval_samples.json")
    adapter_dir = run_dir / "adapter"
    from moalign.integrity import ADAPTER_HASH, folder_sha256

    # the config beside the weights: whoever is handed the folder alone samples it as its run did
    (adapter_dir / CONFIG_FILE).write_text(yaml.safe_dump(asdict(config), sort_keys=False), encoding="utf-8")

    # a param, which nobody can change once logged: what loaders check the weights against
    tracker.log_params(run_id, {ADAPTER_HASH: folder_sha256(adapter_dir)})
    if config.tracking.log_adapter:
        tracker.log_artifacts(run_id, adapter_dir, "adapter")
    tracker.end_run(run_id, "FINISHED")
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    return TrainResult(run_id, run_dir, adapter_dir, steps, eval_scores, pd.DataFrame(history), samples,
                       wall_time, cost, val_scores)
