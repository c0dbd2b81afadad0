"""Pareto-front search over reward weights: weight vectors, strategies (grid, soups), front metrics."""
from moalign.pareto.front import expected_utility, hypervolume, non_dominated, reference_point
from moalign.pareto.weights import weight_vectors

__all__ = ["expected_utility", "hypervolume", "non_dominated", "reference_point", "weight_vectors"]
