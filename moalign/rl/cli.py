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
        data.setdefault("reward", {})["weights"] = parsed
    try:
        return from_dict(TrainConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def config_of_run(run_id: str, tracking_uri: str | None) -> tuple[TrainConfig, Path]:
    """The config a run was started with and its checkpoint folder, read back from MLflow."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from moalign.tracking import read_artifact_text, resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise MoalignError(f"--resume {run_id}: {exc.message.splitlines()[0]}") from None
    text = read_artifact_text(client, run_id, "config.yaml")
    if text is None:
        raise MoalignError(f"--resume {run_id}: the run has no config.yaml (was it started by moalign train?)")
    data = yaml.safe_load(text)
    config = from_dict(TrainConfig, data)
    checkpoint = Path(run.data.tags.get("moalign.checkpoint_dir", Path(config.output_dir) / run_id / "checkpoint"))
    if not (checkpoint / "state.pt").is_file():
        raise MoalignError(f"--resume {run_id}: no checkpoint at {checkpoint}")
    config.output_dir = str(checkpoint.parent.parent)
    return config, checkpoint


def run_train(args) -> int:
    from moalign.rl.trainer import train

    if args.resume:
        uri = build_config(args.config).tracking.tracking_uri if args.config else None
        config, _ = config_of_run(args.resume, uri)
        config.tracking.tracking_uri = config.tracking.tracking_uri or uri
    else:
        config = build_config(args.config, args.weights, args.set)
    try:
        result = train(config, resume_run_id=args.resume)
    except KeyboardInterrupt:
        return 130
    scores = ", ".join(f"{k}={v:.4g}" for k, v in result.eval_scores.items())
    print(f"run {result.run_id}: {result.steps} steps in {result.wall_time:.0f}s; eval: {scores}")
    print(f"adapter: {result.adapter_dir}")
    return 0
