"""moalign: multi-objective alignment of language models.

Score samples with objectives (`score`), fine-tune under a scalarized reward (`train`), search
the Pareto front over reward weights (`search`). Heavy parts import lazily.
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


__all__ = [
    "Batch", "ConfigError", "MAXIMIZE", "MINIMIZE", "MoalignError", "Objective", "build_objectives",
    "get_objective", "get_objective_names", "register_objective", "score", "search", "summarize", "train",
]
