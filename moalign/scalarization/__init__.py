"""From several objective scores to one reward: normalise, scalarise under weights, enforce constraints."""
from moalign.scalarization.constraints import Constraint, parse_constraint
from moalign.scalarization.directions import to_minimize
from moalign.scalarization.ideal import IdealPoint, group_ideal
from moalign.scalarization.lagrangian import LagrangeMultipliers
from moalign.scalarization.normalizers import (
    NORMALIZATIONS, FixedRangeNormalizer, GroupNormalizer, IdentityNormalizer, RunningNormalizer, make_normalizer,
)
from moalign.scalarization.scalarizers import SCALARIZERS, Scalarizer, pbi_direction, validate_weights

CONSTRAINT_METHODS = ("lagrangian", "penalty")

__all__ = [
    "CONSTRAINT_METHODS", "Constraint", "FixedRangeNormalizer", "GroupNormalizer", "IdealPoint", "IdentityNormalizer",
    "LagrangeMultipliers", "NORMALIZATIONS", "RunningNormalizer", "SCALARIZERS", "Scalarizer", "group_ideal",
    "make_normalizer", "parse_constraint", "pbi_direction", "to_minimize", "validate_weights",
]
