"""moalign: multi-objective alignment of language models.

Score samples with objectives (`score`), fine-tune under a scalarized reward (`train`), search
the Pareto front over reward weights (`search`), load any policy on a front (`load_policy`).
Heavy parts import lazily.
"""
from moalign.errors import ConfigError, MoalignError
from moalign.objective import MAXIMIZE, MINIMIZE, Batch, Objective
from moalign.registry import build_objectives, get_objective, get_objective_names, register_objective
from moalign.scoring import score, summarize

__version__ = "0.1.0"


def train(config, resume_run_id: str | None = None):
    """Run RL fine-tuning from a `TrainConfig` (or continue run `resume_run_id` from its checkpoint)."""
    from moalign.rl.trainer import train as _train

    return _train(config, resume_run_id=resume_run_id)


def search(config):
    """Run a Pareto search from a `SearchConfig`; see `moalign.pareto.search.run_search`."""
    from moalign.pareto.search import run_search

    return run_search(config)


def load_policy(ref: str, tracking_uri: str | None = None, device: str | None = None, trust_remote_code: bool = False):
    """(model, tokenizer) of any policy on a front, ready to generate; see `moalign.policies.load_policy`.
    `trust_remote_code` is yours to give: a stored config that asks for it is refused."""
    from moalign.policies import load_policy as _load_policy

    return _load_policy(ref, tracking_uri=tracking_uri, device=device, trust_remote_code=trust_remote_code)


def infer_weights(search: str, labels, tracking_uri: str | None = None, log: bool = True):
    """The reward weights a user's pairwise judgements of a front imply, with intervals and the
    nearest front policy; see `moalign.preferences`."""
    from moalign.preferences import infer_weights_for

    return infer_weights_for(search, labels, tracking_uri, log)


__all__ = [
    "Batch", "ConfigError", "MAXIMIZE", "MINIMIZE", "MoalignError", "Objective", "build_objectives",
    "get_objective", "get_objective_names", "infer_weights", "load_policy", "register_objective", "score", "search", "summarize",
    "train",
]
