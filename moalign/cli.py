"""`moalign` command line: a thin layer over the Python API. Bad input exits 2 with one line."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager

from moalign.errors import MoalignError


def _cmd_objectives(args) -> int:
    from moalign.registry import get_objective_class, get_objective_names

    for name in get_objective_names():
        cls = get_objective_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:22s} {cls.direction:9s} {doc}")
    return 0


def _objective_columns(text: str) -> dict:
    """`--objectives bleu,words=verbosity,chars=verbosity` -> {column: {"type": objective}}: a
    `column=` prefix names the column, so one objective can be scored twice with other settings.

    >>> _objective_columns("bleu, words=verbosity, chars=verbosity")
    {'bleu': {}, 'words': {'type': 'verbosity'}, 'chars': {'type': 'verbosity'}}
    """
    from moalign.errors import ConfigError

    spec = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        column, sep, objective = (part.strip() for part in item.partition("="))
        if sep and not (column and objective):
            raise ConfigError(f"--objectives {item!r}: expected OBJECTIVE or COLUMN=OBJECTIVE")
        if column in spec:
            raise ConfigError(f"--objectives: column {column!r} appears twice; name the second one "
                              f"(e.g. {column}2={objective or column}) to score an objective twice")
        spec[column] = {"type": objective} if sep else {}
    return spec


def _cmd_evaluate(args) -> int:
    from moalign.config import apply_overrides
    from moalign.data import check_table_path, load_samples, write_table
    from moalign.errors import ConfigError
    from moalign.scoring import score, summarize

    spec = _objective_columns(args.objectives)
    for item in args.set:
        objective, dot, _ = item.partition("=")[0].partition(".")
        if not dot:
            raise ConfigError(f"--set {item!r}: expected OBJECTIVE.PARAMETER=VALUE")
        if objective not in spec:
            raise ConfigError(f"--set {item!r}: {objective!r} is not one of --objectives")
    apply_overrides(spec, args.set)
    if args.out:
        check_table_path(args.out)
    samples = load_samples(args.data, require=("completion",))
    scores = score(samples, spec, progress=not args.quiet)
    if args.out:
        frame = scores.copy()
        for field in ("prompt", "completion"):
            frame.insert(len(frame.columns) - len(scores.columns), field, [s.get(field) or "" for s in samples])
        write_table(frame, args.out)
    prompts = [s.get("prompt") if s.get("prompt") is not None else f"row {i}" for i, s in enumerate(samples)]
    print(summarize(scores, prompts=prompts).to_string(float_format=lambda v: f"{v:.4f}"))
    if args.out:
        print(f"wrote {len(scores)} rows to {args.out}")
    return 0


def _cmd_train(args) -> int:
    from moalign.rl.cli import run_train

    return run_train(args)


def _cmd_run(args) -> int:
    from moalign.pipeline import run_pipeline_file

    run_pipeline_file(args.pipeline, args.set)
    return 0


def _cmd_report(args) -> int:
    from moalign.reports.build import build_report

    from moalign.data import check_writable
    from moalign.tracking import MlflowTracker

    runs = [r for r in (args.runs or "").split(",") if r]
    check_writable(args.out, directory=True)
    MlflowTracker(None, args.tracking_uri)  # probes the store: a wrong URI fails in seconds, in one line
    paths = build_report(args.experiment, args.out, run_ids=runs or None, tracking_uri=args.tracking_uri)
    for path in paths:
        print(f"wrote {path}")
    return 0


def _cmd_generate(args) -> int:
    from moalign.generation import generate_file

    n = generate_file(args.run, args.data, args.out, args.set, args.seed, args.tracking_uri, progress=not args.quiet,
                      targets=args.targets, trust_remote_code=args.trust_remote_code)
    print(f"wrote {n} rows to {args.out}")
    return 0


def _cmd_export(args) -> int:
    from moalign.export import export_policy

    print(f"wrote {export_policy(args.run, args.out, args.tracking_uri, trust_remote_code=args.trust_remote_code)}")
    return 0


def _cmd_register(args) -> int:
    from moalign.mlflow_model import register_policy
    from moalign.serving import register_front

    if args.search:
        version = register_front(args.search, args.name, args.alias, args.tracking_uri, args.trust_remote_code,
                                 args.cache_size)
    else:
        version = register_policy(args.run, args.name, args.alias, args.tracking_uri, args.trust_remote_code)
    print(f"registered {args.name} version {version.version}: models:/{args.name}/{version.version}"
          + (f", models:/{args.name}@{args.alias}" if args.alias else ""))
    return 0


def _cmd_front(args) -> int:
    from moalign.policies import front_policies
    from moalign.reports.labels import interval

    table = front_policies(args.search, args.tracking_uri)
    objectives = [c[: -len("_ci_low")] for c in table.columns if c.endswith("_ci_low")]
    shown = table[["ref"]].copy()
    for o in objectives:
        shown[o] = [interval(*v) for v in zip(table[o], table[f"{o}_ci_low"], table[f"{o}_ci_high"])]
    for column in ("feasible", "non_dominated", "n_seeds"):
        if column in table:
            shown[column] = table[column]
    print(f"{args.search}: {table['status'].iloc[0]}; mean over seeds [95% interval over prompts and seeds]")
    print(shown.to_string(index=False))
    return 0


def _cmd_prefer(args) -> int:
    import textwrap

    from moalign.data import atomic_path
    from moalign.preferences import infer_weights, load_front, log_preferences, read_labels

    answers, tracker, parent = load_front(args.search, args.tracking_uri)
    if args.write_pairs:
        pairs = answers.pairs(args.pairs, args.seed)
        with atomic_path(args.write_pairs) as tmp:
            pairs.assign(winner="").to_json(tmp, orient="records", lines=True, force_ascii=False)
        print(f"wrote {len(pairs)} pairs to {args.write_pairs}: fill in each winner (a, b or tie), then "
              f"moalign prefer --search {args.search} --labels {args.write_pairs}")
        return 0
    if args.labels:
        judgements = read_labels(args.labels, answers)
    else:
        if not sys.stdin.isatty():
            raise MoalignError("moalign prefer asks its questions on a terminal: give --labels FILE (judgements as "
                               "JSON lines) or --write-pairs FILE (pairs to judge elsewhere)")
        rows = []
        for i, pair in answers.pairs(args.pairs, args.seed).iterrows():
            print(f"\n[{i + 1}/{args.pairs}] {textwrap.shorten(pair['prompt'], 300)}")
            print("  a:", textwrap.fill(pair["completion_a"], 100, subsequent_indent="     "))
            print("  b:", textwrap.fill(pair["completion_b"], 100, subsequent_indent="     "))
            answer = ""
            while answer not in ("a", "b", "t", "tie", "q"):
                answer = input("  which is better? a, b, t(ie), q(uit): ").strip().lower()
            if answer == "q":
                break
            rows.append({"prompt": pair["prompt"], "a": pair["a"], "b": pair["b"], "winner": "tie" if answer == "t" else answer})
        import pandas as pd

        judgements = pd.DataFrame(rows, columns=["prompt", "a", "b", "winner"])
    result = infer_weights(judgements, answers, n_boot=args.n_bootstrap)
    run_id = log_preferences(tracker, parent, judgements, result)
    print(result.table().to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    held = f"{result.heldout_accuracy:.0%} of {result.heldout_n} held-back decisive judgements predicted" \
        if result.heldout_n else "too few judgements to hold some back"
    print(f"{result.note}; {held}")
    if result.nearest_ref:
        print(f"nearest front policy: {result.nearest_ref}  (moalign generate --run {result.nearest_ref} ...)")
    print(f"logged as run {run_id} under the search")
    return 0


def _cmd_ui(args) -> int:
    from moalign.tracking import launch_ui

    return launch_ui(args.host, args.port, args.tracking_uri)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moalign", description="Multi-objective alignment of language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("objectives", help="list registered objectives")
    p.set_defaults(func=_cmd_objectives)

    p = sub.add_parser("evaluate", help="score a JSONL/CSV file of samples with objectives")
    p.add_argument("--data", required=True, help="JSONL or CSV with prompt, completion, references/reference, source")
    p.add_argument("--objectives", required=True,
                   help="comma-separated objective names; COLUMN=OBJECTIVE scores one objective under another "
                        "column name, e.g. words=verbosity,chars=verbosity --set chars.unit=chars")
    p.add_argument("--set", action="append", default=[], metavar="OBJ.KEY=VALUE", help="objective parameter")
    p.add_argument("--out", help="per-sample scores, .csv or .parquet")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_evaluate)

    trust_help = ("let the model repository's own code run (a config read from MLflow cannot ask for it: anyone who "
                  "can write to the store could)")
    p = sub.add_parser("train", help="RL fine-tuning under a scalarized multi-objective reward")
    p.add_argument("--config", help="YAML training config")
    p.add_argument("--weights", help="comma-separated weights, one per reward objective")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--resume", metavar="RUN_ID", help="continue an MLflow run from its last checkpoint")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="with --resume: " + trust_help + "; a config file of yours says it itself")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("run", help="run a pipeline YAML: data -> search -> report")
    p.add_argument("pipeline")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="pipeline override")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("report", help="HTML and Markdown report of searches in an MLflow experiment")
    p.add_argument("--experiment", required=True)
    p.add_argument("--runs", help="comma-separated parent run ids (default: every search in the experiment)")
    p.add_argument("--out", default="moalign-report")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.set_defaults(func=_cmd_report)

    policy = "MLflow run id, EXPERIMENT/SEARCH@W1,W2[:sSEED] (or @base), or an adapter folder"
    uri_help = "default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    p = sub.add_parser("generate", help="completions of a policy on a front for a file of prompts")
    p.add_argument("--run", required=True, metavar="REF", help=policy)
    p.add_argument("--data", required=True, help="JSONL or CSV with a prompt field")
    p.add_argument("--out", required=True, help="JSON lines: the input fields, generation, completion")
    p.add_argument("--set", action="append", default=[], metavar="sampling.KEY=VALUE",
                   help="override the run's held-out sampling (eval_temperature, eval_num_generations, "
                        "max_new_tokens, top_k, top_p)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (when eval_temperature > 0)")
    p.add_argument("--targets", metavar="OBJ=SCORE,...", help="a Rewards-in-Context policy: ask for these stated "
                   "scores (its normalised units, higher is better) instead of its weights' targets")
    p.add_argument("--tracking-uri", help=uri_help)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--trust-remote-code", action="store_true", help=trust_help)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("export", help="a policy as a merged Hugging Face checkpoint with a model card")
    p.add_argument("--run", required=True, metavar="REF", help=policy)
    p.add_argument("--out", required=True, help="a new (or empty) folder")
    p.add_argument("--tracking-uri", help=uri_help)
    p.add_argument("--trust-remote-code", action="store_true", help=trust_help)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("register", help="log a policy, or a whole front, as an MLflow model in the Model Registry")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", metavar="REF", help=policy)
    what.add_argument("--search", metavar="EXPERIMENT/SEARCH",
                      help="the whole front as one model that answers each request at the weights it asks for")
    p.add_argument("--cache-size", type=int, default=4, help="--search: merged weight vectors kept in memory (soups, "
                                                              "nearest policies)")
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--alias", help="alias to point at the new version, e.g. champion")
    p.add_argument("--tracking-uri", help=uri_help)
    p.add_argument("--trust-remote-code", action="store_true", help=trust_help)
    p.set_defaults(func=_cmd_register)

    p = sub.add_parser("front", help="list a search's front (finished or in progress): references, scores, intervals")
    p.add_argument("search", metavar="EXPERIMENT/SEARCH")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.set_defaults(func=_cmd_front)

    p = sub.add_parser("prefer", help="infer reward weights from which of two answers of a front you prefer")
    p.add_argument("--search", required=True, metavar="EXPERIMENT/SEARCH")
    p.add_argument("--labels", help="judgements as JSON lines: prompt, a, b (policies: 'base' or weights), winner (a|b|tie)")
    p.add_argument("--write-pairs", metavar="FILE", help="write the pairs to judge (JSON lines, winner left empty) and stop")
    p.add_argument("--pairs", type=int, default=20, help="pairs to ask about (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-bootstrap", type=int, default=500)
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.set_defaults(func=_cmd_prefer)

    p = sub.add_parser("ui", help="start the MLflow UI on the project's store")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.set_defaults(func=_cmd_ui)
    return parser


@contextmanager
def _sigterm_as_interrupt(received: list):
    """SIGTERM (`kill`, a scheduler's stop, a container shutdown) is handled like Ctrl-C: it raises
    KeyboardInterrupt in the main thread, on which the trainer checkpoints and marks its run KILLED.
    Only the first one raises; a second one during that clean-up is ignored so that it completes."""
    def handler(signum, frame):
        if not received:
            received.append(signum)
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit codes: 0 done, 2 bad input or a fault (one line on stderr), 130
    interrupted (Ctrl-C), 143 stopped by SIGTERM (128 + 15, what schedulers read as "terminated")."""
    # Keep the terminal for moalign's own progress bars: no bar per model load or artifact download,
    # and no MLflow INFO lines (its warnings still show).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())  # in case it already was
    from moalign.tracking import bound_http_retries

    bound_http_retries()
    args = build_parser().parse_args(argv)
    received = []
    try:
        with _sigterm_as_interrupt(received):
            return args.func(args)
    except MoalignError as exc:
        print(f"moalign: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moalign: stopped by SIGTERM" if received else "moalign: interrupted", file=sys.stderr)
        return 143 if received else 130


if __name__ == "__main__":
    sys.exit(main())
