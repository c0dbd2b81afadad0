"""`moalign train`: YAML config + `--weights` + `--set` overrides, or `--resume RUN_ID`."""
from __future__ import annotations

from pathlib import Path

import yaml

from moalign.config import apply_overrides, from_dict, load_yaml
from moalign.errors import ConfigError, MoalignError
from moalign.rl.config import TrainConfig


def build_config(path: str | None, weights: str | None = None, overrides: list[str] = ()) -> TrainConfig:
    data = load_yaml(path) if path else {}
    apply_overrides(data, overrides)
    if weights:
        try:
            parsed = [float(w) for w in weights.split(",")]
        except ValueError:
            raise ConfigError(f"--weights {weights!r}: expected comma-separated numbers") from None
        reward = data.setdefault("reward", {})
        if isinstance(reward, dict):  # otherwise from_dict names `reward` as the key at fault
            reward["weights"] = parsed
    try:
        return from_dict(TrainConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def check_inputs(config: TrainConfig) -> None:
    """The config against its inputs: objectives, data and the fields the objectives need.
    Errors name their key from the top of the training config (`data: ...`)."""
    from moalign.registry import build_objectives
    from moalign.rl.reward import MultiObjectiveReward
    from moalign.rl.trainer import check_objective_fields, load_data

    reward = MultiObjectiveReward(config.reward)
    extra = build_objectives(config.eval_objectives) if config.eval_objectives else {}
    try:
        train_records, eval_records = load_data(config)
    except ConfigError:
        raise
    except MoalignError as exc:
        raise ConfigError(f"data: {exc}") from None
    check_objective_fields(reward.all_objectives, train_records)
    check_objective_fields({**reward.all_objectives, **extra}, eval_records)


def check_environment(config: TrainConfig) -> None:
    """What this machine must provide: the model (found without loading it) and a writable
    output folder. Errors name the key (`model.name: ...`, `output_dir: ...`)."""
    from moalign.data import check_writable
    from moalign.models import check_model
    from moalign.rl.distributed import check_world_size

    check_world_size(config)  # a launcher's processes must share each step's prompt groups evenly

    for key, check in (("model.name", lambda: check_model(config.model.name)),
                       ("output_dir", lambda: check_writable(config.output_dir, directory=True))):
        try:
            check()
        except MoalignError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    from moalign.models import check_context, model_config

    check_context(model_config(config.model.name, config.model.trust_remote_code), config.sampling.max_new_tokens)


def preflight(config: TrainConfig) -> None:
    """Everything about the user's input that can fail, checked before any model loads or MLflow run starts."""
    check_inputs(config)
    check_environment(config)


def config_of_run(run_id: str, tracking_uri: str | None, trust_remote_code: bool = False):
    """The config a run was started with, and a tracker on its experiment, read back from MLflow.
    A stored config cannot ask to run a model's own code (`trust_remote_code`): only the caller can."""
    from moalign.tracking import MlflowTracker

    try:
        tracker, run = MlflowTracker.for_run(run_id, tracking_uri)
        text = tracker.read_text(run_id, "config.yaml")
    except MoalignError as exc:
        raise MoalignError(f"--resume {run_id}: {exc}") from None
    if run.info.status == "FINISHED":
        raise MoalignError(f"--resume {run_id}: the run has already finished")
    if text is None:
        raise MoalignError(f"--resume {run_id}: the run has no config.yaml (was it started by moalign train?)")
    try:
        config = from_dict(TrainConfig, yaml.safe_load(text))
    except (ConfigError, yaml.YAMLError) as exc:
        raise MoalignError(f"--resume {run_id}: its config.yaml: {exc}".splitlines()[0]) from None
    if config.model.trust_remote_code and not trust_remote_code:
        raise MoalignError(f"--resume {run_id}: its stored config sets model.trust_remote_code, which would run the code "
                           f"of {config.model.name!r} on this machine; pass --trust-remote-code if you trust the store "
                           f"and the model")
    checkpoint = run.data.tags.get("moalign.checkpoint_dir")
    if checkpoint:  # the run's own folder, wherever it was started from
        config.output_dir = str(Path(checkpoint).parent.parent)
    config.tracking.tracking_uri = tracker.uri
    return config, tracker


def run_train(args) -> int:
    from moalign.rl.distributed import launched_rank
    from moalign.rl.trainer import train
    from moalign.tracking import make_tracker

    if args.resume:
        if args.set or args.weights:
            flag = "--set" if args.set else "--weights"
            raise ConfigError(f"--resume {args.resume}: {flag} is not allowed; a resumed run continues with the "
                              f"config it started with (start a new run to change it)")
        uri = build_config(args.config).tracking.tracking_uri if args.config else None
        config, tracker = config_of_run(args.resume, uri, args.trust_remote_code)
        check_environment(config)
    else:
        config = build_config(args.config, args.weights, args.set)
        preflight(config)
        # Created here, before any model loads: it probes the store, so a wrong URI fails in seconds.
        # Only the first of a launcher's processes talks to MLflow.
        tracker = make_tracker(config.tracking.enabled and launched_rank() == 0, config.tracking.experiment,
                               config.tracking.tracking_uri)
    result = train(config, resume_run_id=args.resume, tracker=tracker)
    if launched_rank() != 0:  # the main process reports the run
        return 0
    scores = ", ".join(f"{k}={v:.4g}" for k, v in result.eval_scores.items())
    print(f"run {result.run_id}: {result.steps} steps in {result.wall_time:.0f}s; eval: {scores}")
    print(f"adapter: {result.adapter_dir}")
    return 0
