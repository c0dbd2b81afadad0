"""The multi-objective reward: score samples, normalise, scalarise under weights, penalise."""
from __future__ import annotations


from moalign.objective import Batch
from moalign.registry import build_objectives, get_objective
from moalign.rl.config import RewardConfig
from moalign.scalarization import Scalarizer, make_normalizer, parse_constraint, to_minimize, validate_weights
from moalign.scoring import score


class MultiObjectiveReward:
    """Callable: Batch -> (rewards [N], raw scores DataFrame, metrics dict).

    Objectives named only in a constraint (e.g. `toxicity <= 0.1`) are scored with their
    default parameters but carry no weight.
    """

    def __init__(self, config: RewardConfig):
        self.config = config
        self.objectives = build_objectives(config.objectives)
        self.names = list(self.objectives)
        self.directions = [o.direction for o in self.objectives.values()]
        self.weights = validate_weights(config.weights, self.names)
        self.constraints = [parse_constraint(text) for text in config.constraints]
        self.constraint_only = {c.objective: get_objective(c.objective) for c in self.constraints
                                if c.objective not in self.objectives}
        self.normalizer = make_normalizer(config.normalization, self.names, config.ranges)
        self.scalarizer = Scalarizer(config.scalarizer, self.weights, config.pbi_theta, config.augment_rho)

    @property
    def all_objectives(self) -> dict:
        return {**self.objectives, **self.constraint_only}

    def __call__(self, batch: Batch):
        raw = score(batch, self.all_objectives)
        values = raw[self.names].to_numpy(dtype=float)
        self.normalizer.update(values)
        normalized = self.normalizer(values)
        F = to_minimize(normalized, self.directions)
        self.scalarizer.update(F)
        scalarized = -self.scalarizer(F)
        reward = scalarized.copy()
        metrics = {"reward/scalarized": float(scalarized.mean())}
        for constraint in self.constraints:
            violation = constraint.violation(raw[constraint.objective].to_numpy(dtype=float))
            reward -= self.config.constraint_penalty * violation
            metrics[f"constraints/{constraint.objective}/violation"] = float(violation.mean())
            metrics[f"constraints/{constraint.objective}/satisfied"] = float((violation == 0).mean())
        for j, name in enumerate(self.names):
            metrics[f"rewards/{name}/mean"] = float(values[:, j].mean())
            metrics[f"rewards/{name}/normalized"] = float(normalized[:, j].mean())
        for name in self.constraint_only:
            metrics[f"rewards/{name}/mean"] = float(raw[name].mean())
        metrics["reward/total"] = float(reward.mean())
        return reward, raw, metrics

    def state_dict(self) -> dict:
        return {"normalizer": self.normalizer.state_dict(), "scalarizer": self.scalarizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.normalizer.load_state_dict(state["normalizer"])
        self.scalarizer.load_state_dict(state["scalarizer"])

