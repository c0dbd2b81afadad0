"""Any policy on a front, by reference: found in MLflow (`find_policy`), then loaded ready to
generate (`load_policy`), exported (`moalign.export`) or registered (`moalign.mlflow_model`).

A reference is one of

- an MLflow run id: a trained run, a run reused by another search, a soup, a decoding-time mix,
  or the base model;
- ``EXPERIMENT/SEARCH@W1,W2[:sSEED]``: the policy at reward weights ``W1,W2`` (one per objective,
  in the search's order, matched to 4 decimals) on the front of the search whose parent run is
  named SEARCH in EXPERIMENT (the latest such search); ``EXPERIMENT/SEARCH@base`` is its base
  model. With several training seeds ``:sSEED`` picks one run, default the search's first seed;
- a local adapter folder (e.g. ``moalign_runs/<run id>/adapter``): its adapter_config.json names
  the base model (a hub id, a local path or ``smollm2-135m-instruct``), resolved on this machine.

Each is rebuilt from what MLflow records: a trained run from its adapter (the run's local folder if
it is still there, else the logged ``adapter`` artifact), a reused run from the run it copied, a
soup from its endpoints' adapters mixed by `AdapterSoup` (peft ``cat``), a decoding-time mix from
its endpoints' adapters run side by side by `DecodingMix` (no merged weights: it cannot be
exported or registered), the base model as it is.
"""
from __future__ import annotations

import json
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from moalign.errors import MoalignError
from moalign.rl.config import ModelConfig, TrainConfig

REF_FORMS = "an MLflow run id, EXPERIMENT/SEARCH@W1,W2[:sSEED], EXPERIMENT/SEARCH@base, or an adapter folder"
_SEARCH_REF = re.compile(r"(?P<experiment>.+)/(?P<search>[^/@]+)@(?P<policy>[^:@]+)(?::s(?P<seed>\d+))?")
_KEY = re.compile(r"(?P<role>train|soup|mix|conditioned|best_of_n|rejection|rewards_in_context):(?P<weights>[^:]+)"
                  r":s(?P<seed>-?\d+)")  # children.child_key
TOLERANCE = 5e-5 + 1e-12  # keys hold weights to 4 decimals


@dataclass
class PolicyRecord:
    """What a policy is, read from MLflow (or an adapter folder) without loading any weights."""

    # trained | soup | mix | base | conditioned (a weight-conditioned policy told `weights` in its prompts) |
    # rejection (fine-tuned on its best samples) | rewards_in_context (told the targets of `weights` in its prompts) |
    # best_of_n (the base model sampling `sampling["n"]` answers, keeping the best feasible one under `weights`)
    role: str
    model: ModelConfig
    run_id: str | None = None  # the policy's own run; None for a bare adapter folder
    # the training config: a soup's is its first endpoint's, the base model's its search's
    config: TrainConfig | None = None
    weights: list[float] | None = None  # reward weights (trained) or mixing weights (soup, mix)
    # where the weights live, one per adapter: a training run's id, or a local folder
    sources: list[str | Path] = field(default_factory=list)
    tracking_uri: str | None = None
    sampling: dict | None = None  # best_of_n: n, temperature and top_p of its samples


@contextmanager
def guard(uri: str, what: str):
    """MLflow failures as one line (see moalign.tracking.describe_failure)."""
    from moalign.tracking import describe_failure

    try:
        yield
    except MoalignError:
        raise
    except Exception as exc:
        described = describe_failure(uri, what, exc)
        if described is None:
            raise
        raise MoalignError(described[0]) from None


def find_policy(ref: str, tracking_uri: str | None = None) -> PolicyRecord:
    """The policy `ref` names (see the module docstring for the forms it takes)."""
    ref = str(ref).strip()
    folder = Path(ref).expanduser()
    if (folder / "adapter_config.json").is_file():
        return _folder_record(folder)
    if folder.is_dir():
        raise MoalignError(f"{ref}: not an adapter folder (no adapter_config.json)")
    match = _SEARCH_REF.fullmatch(ref)
    if ("@" in ref or "/" in ref or not ref) and not match:
        raise MoalignError(f"policy {ref!r}: expected {REF_FORMS}")
    from moalign.tracking import MlflowTracker

    tracker = MlflowTracker(None, tracking_uri)
    run_id = _search_policy(tracker, **match.groupdict()) if match else ref
    return _run_record(tracker, tracker.get_run(run_id))


def _folder_record(folder: Path) -> PolicyRecord:
    """An adapter folder: its base model from adapter_config.json; where its run saved its config
    beside it (`moalign_config.yaml`), that too, so it is sampled (and told weights or targets) as
    its run's evaluation was."""
    from moalign.rl.runs import CONFIG_FILE

    try:
        name = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise MoalignError(f"{folder / 'adapter_config.json'}: unreadable ({exc})".splitlines()[0]) from None
    if not name:
        raise MoalignError(f"{folder / 'adapter_config.json'}: no base_model_name_or_path")
    saved = folder / CONFIG_FILE
    if not saved.is_file():  # an adapter from before configs were saved beside it, or from elsewhere
        return PolicyRecord("trained", ModelConfig(name=name), sources=[folder])
    from moalign.config import from_dict, parse_yaml

    try:
        config = from_dict(TrainConfig, parse_yaml(saved.read_text(encoding="utf-8")))
    except Exception as exc:  # a YAML or config error: either way the folder's config is unusable
        raise MoalignError(f"{saved}: {exc}".splitlines()[0]) from None
    return PolicyRecord(_trained_kind(config), config.model, None, config, config.reward.weights, [folder])


def _run_record(tracker, run) -> PolicyRecord:
    tags, run_id = run.data.tags, run.info.run_id
    tracker.experiment_id = run.info.experiment_id  # find_runs searches this run's experiment
    if tags.get("moalign.kind") == "search":
        with guard(tracker.uri, f"read the experiment of run {run_id}"):
            experiment = tracker.client.get_experiment(run.info.experiment_id).name
        raise MoalignError(f"run {run_id} is the search {run.info.run_name!r}, not a policy: name one of "
                           f"its policies, e.g. {experiment}/{run.info.run_name}@base")
    role = tags.get("moalign.role") or ("trained" if tags.get("moalign.kind") == "train" else None)
    if role in TRAINED_ROLES:
        origin = _origin(tracker, run)
        config = _config(tracker, origin)
        # a weight-conditioned (or Rewards-in-Context) run is that policy told the weights it was evaluated at
        return PolicyRecord(_trained_kind(config), config.model, run_id, config, config.reward.weights,
                            [origin.info.run_id], tracker.uri)
    if role in ("soup", "mix"):
        weights = _mix_weights(run)
        endpoints = [_origin(tracker, tracker.get_run(i)) for i in _endpoint_ids(tracker, run, len(weights))]
        config = _config(tracker, endpoints[0])
        return PolicyRecord(role, config.model, run_id, config, weights, [e.info.run_id for e in endpoints], tracker.uri)
    if role in ("conditioned", "rewards_in_context"):  # one weight vector: the training run's weights, told these
        weights = _mix_weights(run)
        trained = _origin(tracker, tracker.get_run(json.loads(tags["moalign.endpoints"])[0]))
        config = _config(tracker, trained)
        return PolicyRecord(role, config.model, run_id, config, weights, [trained.info.run_id], tracker.uri)
    if role == "best_of_n":  # the base model sampling n answers, the best feasible one under these weights kept
        weights = _mix_weights(run)
        pool = tracker.get_run(json.loads(tags["moalign.endpoints"])[0])
        config = _config(tracker, run)  # the choosing search's settings (its pool may have served others)
        n = int(float(pool.data.params.get("pool.n", 1)))
        return PolicyRecord(role, config.model, run_id, config, weights, [], tracker.uri,
                            sampling={k: float(pool.data.params.get(f"pool.{k}", d)) for k, d in
                                      (("n", n), ("temperature", 1.0), ("top_p", 1.0))})
    if role == "base":
        config = _search_config(tracker, run)
        return PolicyRecord("base", config.model, run_id, config, tracking_uri=tracker.uri)
    raise MoalignError(f"run {run_id} is not a policy made by moalign train or search (no moalign.role tag)")


# runs whose weights are a trained policy: RL, weight-conditioned, rejection sampling or Rewards-in-Context fine-tunes
TRAINED_ROLES = ("trained", "conditioned-train", "rejection", "rejection-iteration", "rewards_in_context-train")


def _trained_kind(config: TrainConfig) -> str:
    """What a training run's policy is, from its config."""
    if config.conditioning.enabled:
        return "conditioned"
    if config.supervised.enabled:
        return "rewards_in_context" if config.supervised.select == "rewards_in_context" else "rejection"
    return "trained"


def _origin(tracker, run):
    """The run that trained this one's weights: a reused run points to it with `moalign.reused_from`."""
    seen = {run.info.run_id}
    while (source := run.data.tags.get("moalign.reused_from")) and source not in seen:
        seen.add(source)
        run = tracker.get_run(source)
    return run


def _config(tracker, run) -> TrainConfig:
    from moalign.config import from_dict, parse_yaml

    text = tracker.read_text(run.info.run_id, "config.yaml")
    if text is None:
        raise MoalignError(f"run {run.info.run_id} has no config.yaml (was it made by moalign train?)")
    try:
        return from_dict(TrainConfig, parse_yaml(text))
    except Exception as exc:  # a YAML or config error: either way the record is unusable
        raise MoalignError(f"run {run.info.run_id}: its config.yaml: {exc}".splitlines()[0]) from None


def _mix_weights(run) -> list[float]:
    try:
        return [float(w) for w in json.loads(run.data.params["reward.weights"])]
    except (KeyError, ValueError, TypeError):
        raise MoalignError(f"{run.data.tags.get('moalign.role')} run {run.info.run_id} has no param reward.weights "
                           f"(its mixing weights)") from None


def _children(tracker, parent) -> dict[str, str]:
    """Child key -> run id of a search's finished policies; runs reused from another search are
    either children of their own (tag `moalign.reused_from`) or listed in the parent's `moalign.reused`."""
    found = tracker.find_runs(f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and attributes.status = 'FINISHED'")
    keys = {r.data.tags["moalign.key"]: r.info.run_id for r in found if "moalign.key" in r.data.tags}
    try:
        reused = json.loads(parent.data.tags.get("moalign.reused") or "{}")
    except ValueError:
        raise MoalignError(f"search run {parent.info.run_id}: tag moalign.reused is not JSON") from None
    return {**reused, **keys}


def _endpoint_ids(tracker, soup, m: int) -> list[str]:
    tagged = soup.data.tags.get("moalign.endpoints")
    if tagged:
        return json.loads(tagged)
    # recorded before soups named their endpoints: the search's trained runs at the one-hot weights
    from moalign.pareto.children import child_key

    parent = tracker.get_run(soup.data.tags["mlflow.parentRunId"])
    children, seed = _children(tracker, parent), soup.data.tags.get("moalign.seed", "0")
    keys = [child_key("trained", [float(i == j) for j in range(m)], seed) for i in range(m)]
    missing = [k for k in keys if k not in children]
    if missing:
        raise MoalignError(f"soup run {soup.info.run_id}: its search has no finished endpoint run {missing[0]}")
    return [children[k] for k in keys]


def _search_config(tracker, base) -> TrainConfig:
    """The base model's settings: those of a training run of its search (every search has one)."""
    parent_id = base.data.tags.get("mlflow.parentRunId")
    children = _children(tracker, tracker.get_run(parent_id)) if parent_id else {}
    # any child that logged its training config: a trained run, or a sample pool (a best-of-n search has no other)
    trained = [run_id for key, run_id in children.items()
               if key.startswith(("train:", "conditioned-train:", "rejection:", "rewards_in_context-train:", "pool:"))]
    if not trained:
        raise MoalignError(f"base run {base.info.run_id}: its search has no finished training run to read "
                           f"the model settings from")
    return _config(tracker, _origin(tracker, tracker.get_run(trained[0])))


def _search_parent(tracker, experiment: str, search: str):
    """The parent run of the latest search named `search` in `experiment`."""
    found = tracker.find_experiment(experiment)
    if found is None:
        raise MoalignError(f"experiment {experiment!r} not found in {tracker.uri}")
    tracker.experiment_id = found.experiment_id
    searches = tracker.find_runs("tags.`moalign.kind` = 'search'")
    named = [r for r in searches if r.info.run_name == search]
    if not named:
        known = ", ".join(sorted({r.info.run_name for r in searches})) or "none"
        raise MoalignError(f"experiment {experiment!r} has no search named {search!r} (searches: {known})")
    return max(named, key=lambda r: r.info.start_time)


def front_policies(search: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The policies on the front of `search` (``EXPERIMENT/SEARCH``): its `front.csv` (role,
    weights, each objective's mean over seeds with its interval, seeds, run ids, feasible,
    non_dominated) with the `ref` that names each policy, ready for `load_policy`, `moalign
    generate`, `export` and `register`. A search still running gives the front of the children
    it has finished (`status` says which): each is usable at once.

    After `make demo` (an example, not a doctest: it needs the demo's store)::

        front_policies("quickstart/soups")[["ref", "chrf", "verbosity"]]
    """
    import io

    from moalign.tracking import MlflowTracker

    experiment, _, name = search.rpartition("/")
    if not experiment or not name:
        raise MoalignError(f"search {search!r}: expected EXPERIMENT/SEARCH")
    tracker = MlflowTracker(None, tracking_uri)
    parent = _search_parent(tracker, experiment, name)
    text = tracker.read_text(parent.info.run_id, "front.csv")
    if text is None:  # still running (or stopped): the front of its finished children so far
        from moalign.reports.collect import load_search

        table = load_search(tracker, parent, finished_only=True).policies
        table["status"] = f"search {parent.info.status.lower()}: {len(table)} policies finished so far"
    else:
        table = pd.read_csv(io.StringIO(text), dtype={"weights": str, "seeds": str, "run_ids": str})
        table["status"] = "search finished"
    table.insert(0, "ref", [f"{search}@{'base' if role == 'base' else w}" for role, w in zip(table["role"], table["weights"])])
    return table


def _search_policy(tracker, experiment: str, search: str, policy: str, seed: str | None) -> str:
    """The run id of `policy` (weights or `base`) on the front of the latest search named `search`."""
    parent = _search_parent(tracker, experiment, search)
    children = _children(tracker, parent)
    where = f"search {experiment}/{search}"
    if policy == "base":
        if "base" not in children:
            raise MoalignError(f"{where} has no finished base-model run")
        return children["base"]
    try:
        wanted = [float(w) for w in policy.split(",")]
    except ValueError:
        raise MoalignError(f"policy {policy!r} of {where}: expected comma-separated weights or 'base'") from None
    runs = {}  # weights -> {seed: run id}
    for key, run_id in children.items():
        if m := _KEY.fullmatch(key):
            runs.setdefault(m["weights"], {})[int(m["seed"])] = run_id
    at = [w for w in runs if _same(w, wanted)]
    if not at:
        raise MoalignError(f"{where} has no policy at weights {policy} (its weights: {'; '.join(sorted(runs))}; or base)")
    by_seed = runs[at[0]]
    chosen = int(seed) if seed is not None else _first_seed(parent, by_seed)
    if chosen not in by_seed:
        raise MoalignError(f"{where}: policy {at[0]} has no run for seed {chosen} (seeds: {', '.join(map(str, sorted(by_seed)))})")
    return by_seed[chosen]


def _same(key_weights: str, wanted: list[float]) -> bool:
    have = [float(w) for w in key_weights.split(",")]
    return len(have) == len(wanted) and all(abs(a - b) <= TOLERANCE for a, b in zip(have, wanted))


def _first_seed(parent, by_seed: dict) -> int:
    try:
        seeds = [int(s) for s in json.loads(parent.data.params.get("seeds", "[]"))]
    except (ValueError, TypeError):
        seeds = []
    return next((s for s in seeds if s in by_seed), min(by_seed))


def weights_dir(source: str | Path, tracker, scratch: Path) -> Path:
    """A local folder with a training run's adapter (or full weights, `model.pt`): the run's own
    folder when it is still on this machine and hashes to what the run logged at training, else
    its logged `adapter` artifact, downloaded into `scratch` and checked the same way
    (`moalign.integrity.verified_dir`). A `Path` is a folder the caller named, used as it is."""
    from moalign.integrity import verified_dir

    if isinstance(source, Path):
        return source
    return verified_dir(tracker, tracker.get_run(source), scratch)


def build_policy(record: PolicyRecord, device: str | None = None, targets: list[float] | None = None,
                 trust_remote_code: bool = False):
    """(model, tokenizer) for `record`: the adapter (or the soup's mix) merged into the base
    model's weights, so the model is a plain transformers model, the one `export` saves; a
    decoding-time mix is a `moalign.pareto.mixing.MixedPolicy`, which generates but has nothing
    to save (it runs its endpoints side by side). `targets`: a Rewards-in-Context policy told these
    stated scores instead of those of its weights. `trust_remote_code` is the caller's alone: a
    stored config that asks for it is refused (see `check_remote_code`)."""
    from moalign.models import apply_weights, load_causal_lm, load_tokenizer
    from moalign.tracking import MlflowTracker

    if record.role == "best_of_n":
        from moalign.pareto.best_of_n import BestOfN

        BestOfN.check_reference_free(record)
    check_remote_code(record, trust_remote_code)
    record = replace(record, model=replace(record.model, trust_remote_code=trust_remote_code))
    model_cfg = record.model
    tracker = MlflowTracker(None, record.tracking_uri) if record.run_id else None
    with tempfile.TemporaryDirectory(prefix="moalign-policy-") as scratch:
        dirs = [weights_dir(s, tracker, Path(scratch) / str(i)) for i, s in enumerate(record.sources)]
        if record.role == "soup":
            model, tokenizer = _mix(model_cfg, dirs, record.weights, device)
        elif record.role == "mix":  # the endpoints are loaded here, before the scratch folder goes
            from moalign.pareto.mixing import DecodingMix

            mix = DecodingMix(model_cfg, dirs, device)
            model, tokenizer = mix.policy(record.weights), mix.tokenizer
        else:
            tokenizer = load_tokenizer(model_cfg.name, model_cfg.trust_remote_code)
            model = load_causal_lm(model_cfg.name, model_cfg.dtype, device, model_cfg.trust_remote_code,
                                   model_cfg.attn_implementation)
            if dirs:
                model = apply_weights(model, model_cfg, dirs[0])
        names = list(record.config.reward.objectives) if record.config else []
        weights = record.weights or [1.0] * len(names)  # None: equal
        if record.role == "rewards_in_context":  # the scale travels with the adapter: read before the scratch goes
            from moalign.rl.rewards_in_context import ScoreScale, targets_tokenizer

            scale = ScoreScale.load(dirs[0])
            tokenizer = targets_tokenizer(tokenizer, scale.names, scale.targets(weights) if targets is None else targets)
    if record.role == "conditioned":  # its chat template states the weights, wherever prompts go through it
        from moalign.rl.conditioning import conditioned_tokenizer

        tokenizer = conditioned_tokenizer(tokenizer, names, weights)
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if record.role == "best_of_n":
        from moalign.pareto.best_of_n import BestOfN

        model = BestOfN(model.eval(), tokenizer, record.config, weights, **record.sampling)
    return model.eval(), tokenizer


def _mix(model_cfg: ModelConfig, dirs: list[Path], weights: list[float], device: str | None):
    from moalign.pareto.soups import AdapterSoup

    soup = AdapterSoup(model_cfg, dirs, device)
    with soup.mixed(weights) as mixed:
        if model_cfg.lora:
            # merged inside the context: the mix is an adapter that leaving the context deletes
            return mixed.merge_and_unload(), soup.tokenizer
        state = {k: v.clone() for k, v in mixed.state_dict().items()}  # leaving restores the base weights
    soup.model.load_state_dict(state)
    return soup.model, soup.tokenizer


def check_remote_code(record: PolicyRecord, trust_remote_code: bool) -> None:
    """A config read from a tracking store decides nothing about running code: anyone who can
    write to the store could set `model.trust_remote_code` there. Only the caller's argument (or
    `--trust-remote-code`) lets a model repository's own code run."""
    if record.model.trust_remote_code and not trust_remote_code:
        what = f"run {record.run_id}" if record.run_id else "the policy"
        raise MoalignError(f"{what}: its stored config sets model.trust_remote_code, which would run the code of "
                           f"{record.model.name!r} on this machine; moalign takes that from you only: pass "
                           f"trust_remote_code=True (--trust-remote-code) if you trust the store and the model")


def load_policy(ref: str, tracking_uri: str | None = None, device: str | None = None, trust_remote_code: bool = False):
    """(model, tokenizer) of any policy on a front, ready to generate: the model in eval mode with
    its adapter (or a soup's mix of its endpoints) merged into plain transformers weights (a
    decoding-time mix: a `MixedPolicy`, which has `generate` but no merged weights), the
    tokenizer padding on the left with a pad token set.

    `ref`: an MLflow run id, ``EXPERIMENT/SEARCH@W1,W2[:sSEED]`` (the policy at those reward
    weights on that search's front; with several seeds, default the search's first seed),
    ``EXPERIMENT/SEARCH@base``, or an adapter folder. `tracking_uri`: default
    ``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``.

    After `make demo` (an example, not a doctest: it needs the demo's store)::

        model, tokenizer = load_policy("quickstart/soups@0.5,0.5")
        batch = tokenizer(["Summarize: ..."], return_tensors="pt", padding=True)
        tokenizer.batch_decode(model.generate(**batch, max_new_tokens=40))
    """
    return build_policy(find_policy(ref, tracking_uri), device, trust_remote_code=trust_remote_code)
