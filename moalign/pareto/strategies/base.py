"""What a search strategy is: the units of work it asks for, and how it builds the policies it evaluates.

A strategy is asked, again and again, `next_units(done)`: given the rows of the children finished
so far ({child key: row}), which children should run next. An empty list ends the search. Because
the answer is a function of finished children only, a search killed at any moment asks the same
questions again when re-run and gets the same children (resume needs no state of its own), and a
unit can run in another process: it carries everything but the search's config.

Three kinds of unit:
- `TrainUnit`: train one policy (weights, seed; optionally warm-started from an adapter, with
  another step count, or fine-tuned on a sample pool). `Strategy.train_config` turns it into the
  child's `TrainConfig`.
- `EvalUnit`: evaluate a policy built without training (the base model, a soup, a mix).
  Units with the same `group` are built by one `Strategy.policies` call, which loads what they
  share (the base model, the endpoint adapters) once and yields each policy in turn; or, for a
  policy that chooses among samples already scored (best-of-n), `Strategy.chosen` gives its
  evaluation samples directly.
- `PoolUnit`: sample and score a pool (`moalign.pool`), the shared input of sample-score-select
  strategies; its row carries the pool table's path.

Helpers are children that are no policy of the front (pools, a conditioned policy's training run):
their roles are in `HELPER_ROLES`, and `front_rows` leaves them out.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import numpy as np

from moalign.pareto.children import HELPER_ROLES, child_key, weights_key


@dataclass(frozen=True)
class TrainUnit:
    weights: tuple[float, ...] | None
    seed: int
    role: str = "trained"
    init_adapter: str | None = None  # warm start: this adapter directory instead of a fresh LoRA
    steps: int | None = None  # None: train.optim.steps
    pool: str | None = None  # fine-tune on this pool table (train.supervised) instead of RL
    tag: str = ""  # tells apart units of one role, weights and seed (a rejection iteration)
    online_pools: tuple[str, ...] = ()  # Rewards-in-Context: pools its earlier rounds sampled (supervised.online_pools)

    @property
    def key(self) -> str:
        return child_key(self.role, self.weights, self.seed, self.tag)


@dataclass(frozen=True)
class PoolUnit:
    """Sample `n` completions of every prompt of `split` from the base model (or `adapter`) and
    score them with every objective the search names (`moalign.pool.PoolSpec`)."""

    split: str
    seed: int
    n: int
    temperature: float = 1.0
    top_p: float = 1.0
    adapter: str | None = None
    tag: str = ""  # tells apart pools of one split and seed sampled from other policies
    ask: str = ""  # Rewards-in-Context's online augmentation: the weight vectors the prompts ask for (PoolSpec.ask)

    role = "pool"
    weights = None  # a pool serves every weight vector

    @property
    def key(self) -> str:
        return child_key(self.role, None, self.seed, ":".join(t for t in (self.split, self.tag) if t))


@dataclass(frozen=True)
class EvalUnit:
    role: str  # base | soup | a strategy's own (mix, conditioned...)
    weights: tuple[float, ...] | None
    seed: int
    sources: tuple[str, ...] = ()  # run ids the policy is built from (tag moalign.endpoints), objective order
    source_dirs: tuple[str, ...] = ()  # their adapter directories, same order
    group: str = ""  # units of one group share a `policies` call (one model load)

    @property
    def key(self) -> str:
        return child_key(self.role, self.weights, self.seed)


@dataclass
class NoOptions:
    """A strategy without options of its own: any key under `options:` is an error."""


def check_schedule(config) -> None:
    """A weight schedule in a search must end at each point's own weights (linear or cosine with
    no `end`): any other form trains every point under the same weights, and the front's points
    would differ only in their labels."""
    from moalign.errors import ConfigError

    schedule = config.train.reward.schedule()
    if schedule is not None and (schedule.kind not in ("linear", "cosine") or schedule.end is not None):
        raise ConfigError("train.reward.weight_schedule: in a search, a schedule must end at each point's own weights: "
                          "kind linear or cosine, without `end` (it defaults to the point's weights)")


def check_training(config, **sections) -> None:
    """The training config a strategy will run, its sections switched on (`conditioning`,
    `supervised`), validated now: a combination that cannot train fails before the search starts,
    not when its first child does."""
    train = copy.deepcopy(config.train)
    for section, values in sections.items():
        for key, value in values.items():
            setattr(getattr(train, section), key, value)
    train.__post_init__()


def base_unit(seed: int) -> EvalUnit:
    return EvalUnit("base", None, seed, group="base")


def trained_rows(done: dict, role: str = "trained") -> list[dict]:
    return [r for r in done.values() if r["role"] == role]


class Strategy:
    """Base class: subclasses set `name` (and `Options`, a dataclass validated in its
    `__post_init__`, filled from `SearchConfig.options`) and write `next_units`."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, config, names: list[str], directions: list[str], W: np.ndarray | None):
        """`names`/`directions`: the front's objectives; `W`: the search's weight vectors (`weights:`)."""
        self.config, self.names, self.directions, self.W = config, list(names), list(directions), W
        self.options = self.parse_options(config.options, config)

    @classmethod
    def parse_options(cls, options: dict | None, config=None) -> Any:
        """`SearchConfig.options` as this strategy's `Options`; unknown keys and bad values are one
        ConfigError line naming `options.<key>`. `check(config)` on the result, where defined, checks
        options against the rest of the search (e.g. a budget against the step count)."""
        from moalign.config import from_dict

        parsed = from_dict(cls.Options, options or {}, "options")
        if config is not None:
            check_schedule(config)
            if hasattr(parsed, "check"):
                parsed.check(config)
        return parsed

    def next_units(self, done: dict[str, dict]) -> list[TrainUnit | EvalUnit]:
        """The children to run next, none of them in `done`; [] when the search is complete."""
        raise NotImplementedError

    def evaluations(self, role: str, row: dict, seed: int, done: dict) -> list[EvalUnit]:
        """One evaluation child per weight vector of the search, built from one finished child
        (`row`: the training run, or the pool, it rests on; named in `moalign.endpoints`), those
        not done yet."""
        units = [EvalUnit(role, tuple(float(x) for x in w), seed, (row["run_id"],) if row["run_id"] else (),
                          (str(row["adapter_dir"]),), group=f"{role}:s{seed}") for w in self.W]
        return [u for u in units if u.key not in done]

    def train_config(self, unit: TrainUnit):
        """The child's TrainConfig: the search's, with the unit's weights, seed, warm start, steps."""
        cfg = copy.deepcopy(self.config.train)
        if unit.weights is not None:
            cfg.reward.weights = [float(w) for w in unit.weights]
        cfg.seed = int(unit.seed)
        if unit.init_adapter is not None:
            cfg.model.init_adapter = unit.init_adapter
        if unit.steps is not None:
            cfg.optim.steps = int(unit.steps)
        cfg.tracking.run_name = f"{unit.role}:{weights_key(unit.weights)}:s{unit.seed}" if unit.weights is not None \
            else f"{unit.role}:s{unit.seed}"
        return cfg

    def policies(self, units: list[EvalUnit]) -> Iterator[tuple[EvalUnit, Any, Any]]:
        """(unit, model, tokenizer) for each unit of one group, in order; the model is valid until
        the next item is drawn. The base class builds the base model (group "base")."""
        if any(u.role != "base" for u in units):
            raise NotImplementedError(f"strategy {self.name!r} does not build {units[0].role!r} policies")
        from moalign.models import load_causal_lm, load_tokenizer

        model_cfg = self.config.train.model
        tokenizer = load_tokenizer(model_cfg.name, model_cfg.trust_remote_code)
        tokenizer.padding_side = "left"
        model = load_causal_lm(model_cfg.name, model_cfg.dtype, None, model_cfg.trust_remote_code,
                               model_cfg.attn_implementation)
        for unit in units:
            yield unit, model, tokenizer

    def chosen(self, units: list[EvalUnit]):
        """None: the units' policies are built (`policies`) and generate their evaluation samples.
        A strategy whose policies choose among samples already scored (best-of-n) yields instead
        (unit, evaluation samples with every objective's score, metrics to log) for each unit."""
        return None

    def front_rows(self, rows: list[dict]) -> list[dict]:
        """The rows that are policies of the front: all but helpers (pools, training runs that are
        no point of the front, `HELPER_ROLES`)."""
        return [r for r in rows if r["role"] not in HELPER_ROLES]
