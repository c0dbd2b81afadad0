"""One endpoint for a whole front: any trade-off per request (`moalign register --search`).

A search is logged as one MLflow pyfunc model (`moalign/front_model.py`, "models from code") whose
artifact `front/` holds the base model, the adapters its policies need and `front.json` (the
strategy, objectives, sampling settings, reward config, policies). Each request carries the weights
it wants (`params={"weights": {"chrf": 0.7, "verbosity": 0.3}}`, unnamed objectives 0), and is
answered by the mechanism the strategy allows:

- `conditioned`, `rewards_in_context`: the one trained policy, told the weights (or their targets)
  through the tokenizer's chat template, exactly as evaluation states them;
- `soups`: the endpoints' LoRA deltas mixed at the requested weights and merged into a copy of the
  base, once per distinct weight vector, kept in a bounded cache (`cache_size`, least recently used
  first out);
- `mixing`: the endpoints decoded together at the requested weights;
- `best_of_n` with reference-free objectives: n samples, the best feasible one under the weights;
- `grid`, `adaptive`, `rejection`: the nearest trained policy of the front (L1 over the weights),
  named in the response with its distance.

Every answer is a dict: `completion`, `weights` (normalised, objective order), `policy` (what
answered). Unknown objectives, negative or all-zero weights are an MlflowException with
INVALID_PARAMETER_VALUE, which `mlflow models serve` answers with HTTP 400.
"""
from __future__ import annotations

import copy
import json
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from moalign.errors import MoalignError

ARTIFACT = "front"
SPEC = "front.json"
NEAREST = ("grid", "adaptive", "rejection")
SERVED = ("conditioned", "rewards_in_context", "soups", "mixing", "best_of_n") + NEAREST


def bad_request(message: str):
    """An error `mlflow models serve` turns into HTTP 400 (a bad request), not 500."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class FrontServer:
    """Answers requests at any weights from a front folder (module docstring)."""

    def __init__(self, folder: str | Path, cache_size: int = 4):
        from moalign.config import from_dict
        from moalign.models import load_tokenizer
        from moalign.rl.config import ModelConfig, TrainConfig

        self.folder = Path(folder)
        self.spec = json.loads((self.folder / SPEC).read_text(encoding="utf-8"))
        self.strategy, self.names = self.spec["strategy"], self.spec["objectives"]
        self.config = from_dict(TrainConfig, self.spec["train"])
        self.model_cfg = ModelConfig(**{**asdict(self.config.model), "name": str(self.folder / "base"),
                                        "trust_remote_code": False, "init_adapter": None})
        self.tokenizer = load_tokenizer(self.model_cfg.name)
        self.tokenizer.padding_side = "left"
        self.cache: OrderedDict = OrderedDict()
        self.cache_size = max(1, int(cache_size))
        self.hits = self.misses = 0
        self.lock = threading.Lock()  # one generation at a time: policies share the model's weights
        self._load()

    def _dir(self, relative: str) -> Path:
        return self.folder / relative

    def _load(self) -> None:
        from moalign.models import apply_weights, load_causal_lm

        kind, cfg = self.strategy, self.model_cfg
        if kind in ("conditioned", "rewards_in_context"):
            base = load_causal_lm(cfg.name, cfg.dtype, None, False, cfg.attn_implementation)
            self.model = apply_weights(base, cfg, self._dir(self.spec["adapters"][0])).eval()
        elif kind == "soups":
            from moalign.pareto.soups import AdapterSoup

            self.soup = AdapterSoup(cfg, [self._dir(a) for a in self.spec["adapters"]])
        elif kind == "mixing":
            from moalign.pareto.mixing import DecodingMix

            self.mix = DecodingMix(cfg, [self._dir(a) for a in self.spec["adapters"]])
        elif kind == "best_of_n":
            self.model = load_causal_lm(cfg.name, cfg.dtype, None, False, cfg.attn_implementation).eval()
        if getattr(self, "model", None) is not None:
            self.model.generation_config.pad_token_id = self.tokenizer.pad_token_id

    def weights_of(self, params: dict | None) -> np.ndarray:
        """The request's weights, one per objective in order, normalised; a bad request raises."""
        given = (params or {}).get("weights")
        if given is None:
            return np.full(len(self.names), 1.0 / len(self.names))
        if isinstance(given, str):
            try:
                given = json.loads(given)
            except ValueError:
                raise bad_request(f"weights: expected a mapping of objectives to weights, got {given!r}") from None
        if isinstance(given, (list, tuple)):
            if len(given) != len(self.names):
                raise bad_request(f"weights: got {len(given)} for {len(self.names)} objectives ({', '.join(self.names)})")
            given = dict(zip(self.names, given))
        if not isinstance(given, dict):
            raise bad_request(f"weights: expected a mapping of objectives to weights, got {given!r}")
        unknown = [k for k in given if k not in self.names]
        if unknown:
            raise bad_request(f"weights: unknown objective {unknown[0]!r} (this front's: {', '.join(self.names)})")
        try:
            w = np.array([float(given.get(n) or 0.0) for n in self.names])
        except (TypeError, ValueError):
            raise bad_request(f"weights: expected numbers, got {given!r}") from None
        if not np.isfinite(w).all() or (w < 0).any():
            raise bad_request(f"weights: must be finite and non-negative, got {given!r}")
        if w.sum() <= 0:
            raise bad_request("weights: at least one must be positive")
        return w / w.sum()

    def _cached(self, key: str, build):
        """A merged model for `key`, built once and kept while it is among the `cache_size` most recent."""
        if key in self.cache:
            self.hits += 1
            self.cache.move_to_end(key)
            return self.cache[key]
        self.misses += 1
        value = build()
        self.cache[key] = value
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return value

    def policy_for(self, w: np.ndarray):
        """(model, tokenizer, what answers) for weights `w`."""
        from moalign.pareto.children import weights_key
        from moalign.reports.labels import weights_label

        shown = weights_label(weights_key(w))
        kind = self.strategy
        if kind == "conditioned":
            from moalign.rl.conditioning import conditioned_tokenizer

            return self.model, conditioned_tokenizer(self.tokenizer, self.names, w), f"conditioned policy told {shown}"
        if kind == "rewards_in_context":
            from moalign.rl.rewards_in_context import ScoreScale, targets_tokenizer

            scale = ScoreScale.load(self._dir(self.spec["adapters"][0]))
            targets = scale.targets(w)
            return self.model, targets_tokenizer(self.tokenizer, scale.names, targets), \
                f"rewards_in_context policy told targets {targets} ({shown})"
        if kind == "soups":
            def merge():
                with self.soup.mixed(w) as mixed:
                    return copy.deepcopy(mixed).merge_and_unload().eval()
            return self._cached(weights_key(w), merge), self.tokenizer, f"soup {shown}"
        if kind == "mixing":
            return self.mix.policy(list(w)), self.mix.tokenizer, f"mix {shown}"
        if kind == "best_of_n":
            from moalign.pareto.best_of_n import BestOfN

            n = self.spec["n"]
            return BestOfN(self.model, self.tokenizer, self.config, list(w), n, self.spec["temperature"],
                           self.spec["top_p"]), self.tokenizer, f"best_of_{n} {shown}"
        return self._nearest(w)

    def _nearest(self, w: np.ndarray):
        from moalign.models import apply_weights, load_causal_lm

        policies = self.spec["policies"]
        distances = [float(np.abs(np.asarray(p["weights"]) - w).sum()) for p in policies]
        best = policies[int(np.argmin(distances))]

        def load():
            base = load_causal_lm(self.model_cfg.name, self.model_cfg.dtype, None, False, self.model_cfg.attn_implementation)
            model = apply_weights(base, self.model_cfg, self._dir(best["adapter"])).eval()
            model.generation_config.pad_token_id = self.tokenizer.pad_token_id
            return model

        from moalign.reports.labels import weights_label

        label = f"nearest trained policy {best['role']} {weights_label(best['key'])} (L1 distance {min(distances):.3f})"
        return self._cached(best["key"], load), self.tokenizer, label

    def answer(self, frame: pd.DataFrame, params: dict | None = None) -> list[dict]:
        from moalign.generation import generate_rows
        from moalign.rl.config import SamplingConfig

        if "prompt" not in frame:
            raise bad_request("the input needs a `prompt` column")
        w = self.weights_of(params)
        sampling = SamplingConfig(**{**asdict(self.config.sampling),
                                     **{k: params[k] for k in ("max_new_tokens",) if params and params.get(k)}})
        records = [{k: v for k, v in row.items() if isinstance(v, str)} for row in frame.to_dict("records")]
        with self.lock:
            model, tokenizer, label = self.policy_for(w)
            rows = generate_rows(model, tokenizer, records, sampling, self.config.model.use_chat_template, progress=False)
        return [{"completion": r["completion"], "weights": [round(float(x), 6) for x in w], "policy": label} for r in rows]


def build_front(search: str, folder: Path, tracking_uri: str | None = None, trust_remote_code: bool = False) -> dict:
    """Write `front.json`, the base model and the adapters a search's front needs into `folder`."""
    from moalign.integrity import verified_dir
    from moalign.models import load_causal_lm, load_tokenizer
    from moalign.policies import _config, _origin, _search_parent, check_remote_code, front_policies, guard
    from moalign.tracking import MlflowTracker

    experiment, _, name = search.rpartition("/")
    if not experiment or not name:
        raise MoalignError(f"--search {search!r}: expected EXPERIMENT/SEARCH")
    tracker = MlflowTracker(None, tracking_uri)
    parent = _search_parent(tracker, experiment, name)
    strategy = parent.data.params.get("strategy")
    if strategy not in SERVED:
        raise MoalignError(f"search {search}: strategy {strategy!r} cannot be served per request")
    if parent.data.tags.get("moalign.oracle") == "true":
        raise MoalignError(f"search {search}: a best-of-n front chosen with the references' help is an oracle ceiling, "
                           f"not a policy to serve")
    table = front_policies(search, tracking_uri)
    if str(table["status"].iloc[0]) != "search finished":
        raise MoalignError(f"search {search} has not finished: register it once its front is whole")
    objectives = json.loads(parent.data.params["objectives"])
    trained = table[table["role"] != "base"]
    runs = {key: tracker.get_run(ids.split(",")[0]) for key, ids in zip(trained["weights"], trained["run_ids"].astype(str))}
    first = next(iter(runs.values()))
    adapters, policies = [], []
    folder.mkdir(parents=True, exist_ok=True)
    scratch = folder / ".scratch"

    def copy_adapter(run, i) -> str:
        source = verified_dir(tracker, _origin(tracker, run), scratch / str(i))
        shutil.copytree(source, folder / "adapters" / str(i))
        return f"adapters/{i}"

    spec = {"strategy": strategy, "objectives": objectives, "search": search}
    if strategy in ("conditioned", "rewards_in_context", "soups", "mixing"):
        named = [r for r in runs.values() if r.data.tags.get("moalign.endpoints")]  # a soup, a mix, a told policy
        endpoints = json.loads(named[0].data.tags["moalign.endpoints"]) if named else []
        if not endpoints:
            raise MoalignError(f"search {search}: its policies name no endpoints to serve them from")
        adapters = [copy_adapter(tracker.get_run(run_id), i) for i, run_id in enumerate(endpoints)]
        config = _config(tracker, _origin(tracker, tracker.get_run(endpoints[0])))
    elif strategy == "best_of_n":
        from moalign.rl.reward import MultiObjectiveReward

        config = _config(tracker, first)
        if any("references" in o.requires for o in MultiObjectiveReward(config.reward).all_objectives.values()):
            raise MoalignError(f"search {search}: its best-of-n chooses with reference-based objectives: an oracle")
        pool = tracker.get_run(json.loads(first.data.tags["moalign.endpoints"])[0])
        spec.update(n=int(float(pool.data.params["pool.n"])), temperature=float(pool.data.params["pool.temperature"]),
                    top_p=float(pool.data.params["pool.top_p"]))
    else:  # the front's trained policies, each answering the requests nearest to its weights
        feasible = trained[trained.get("feasible", "feasible") == "feasible"] if "feasible" in trained else trained
        if feasible.empty:
            raise MoalignError(f"search {search}: no feasible trained policy to serve")
        for i, (key, role) in enumerate(zip(feasible["weights"], feasible["role"])):
            policies.append({"key": key, "role": role, "weights": [float(x) for x in key.split(",")],
                             "adapter": copy_adapter(runs[key], i)})
        config = _config(tracker, _origin(tracker, runs[feasible["weights"].iloc[0]]))
    check_remote_code(_record_of(config), trust_remote_code)
    with guard(tracker.uri, "copy the base model"):
        tokenizer = load_tokenizer(config.model.name, trust_remote_code)
        base = load_causal_lm(config.model.name, config.model.dtype, "cpu", trust_remote_code, None)
        base.save_pretrained(folder / "base")
        tokenizer.save_pretrained(folder / "base")
    shutil.rmtree(scratch, ignore_errors=True)
    spec.update(adapters=adapters, policies=policies, train=asdict(config))
    (folder / SPEC).write_text(json.dumps(spec, indent=2, default=str), encoding="utf-8")
    return spec


def _record_of(config):
    from moalign.policies import PolicyRecord

    return PolicyRecord("trained", config.model, None, config)


def register_front(search: str, name: str, alias: str | None = None, tracking_uri: str | None = None,
                   trust_remote_code: bool = False, cache_size: int = 4):
    """Log the front of ``EXPERIMENT/SEARCH`` as one MLflow pyfunc model and register it as a new
    version of `name` (with `alias`); returns the ModelVersion. Serve it with `mlflow models serve`
    and ask for any trade-off per request (module docstring)."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from moalign import front_model
    from moalign.mlflow_model import check_names, example, requirements
    from moalign.policies import guard
    from moalign.tracking import MlflowTracker

    check_names(name, alias)
    tracker = MlflowTracker(None, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="moalign-front-") as tmp:
        spec = build_front(search, Path(tmp) / ARTIFACT, tracking_uri, trust_remote_code)
        settings = {"cache_size": int(cache_size), "max_new_tokens": int(spec["train"]["sampling"]["max_new_tokens"])}
        with guard(tracker.uri, f"register {name!r}"), _use_tracking_uri(tracker.uri):
            info = mlflow.pyfunc.log_model(name="front", python_model=front_model.__file__,
                                           artifacts={ARTIFACT: str(Path(tmp) / ARTIFACT)}, model_config=settings,
                                           signature=front_model.signature(spec["objectives"], settings),
                                           input_example=(example(), {"max_new_tokens": 1}),
                                           pip_requirements=requirements() + [f"moalign=={_version()}", "peft"],
                                           registered_model_name=name)
            version = tracker.client.get_model_version(name, str(info.registered_model_version))
            if alias:
                tracker.client.set_registered_model_alias(name, alias, version.version)
    return version


def _version() -> str:
    from importlib.metadata import version

    return version("moalign")
