"""moalign: multi-objective alignment of language models.

Score samples with objectives (`score`), fine-tune under a scalarized reward (`train`), search
the Pareto front over reward weights (`search`). Heavy parts import lazily.
"""
from moalign.errors import ConfigError, MoalignError
from moalign.objective import MAXIMIZE, MINIMIZE, Batch, Objective
from moalign.registry import build_objectives, get_objective, get_objective_names, register_objective
from moalign.scoring import score, summarize

__version__ = "0.1.0"


def train(config):
    """Run RL fine-tuning from a `TrainConfig`; see `moalign.rl.trainer.train`."""
    from moalign.rl.trainer import train as _train

    return _train(config)


def search(config):
    """Run a Pareto search from a `SearchConfig`; see `moalign.pareto.search.run_search`."""
    from moalign.pareto.search import run_search

    return run_search(config)


__all__ = [
    "Batch", "ConfigError", "MAXIMIZE", "MINIMIZE", "MoalignError", "Objective", "build_objectives",
    "get_objective", "get_objective_names", "register_objective", "score", "search", "summarize", "train",
]
