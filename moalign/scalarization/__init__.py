"""From several objective scores to one reward: normalise, scalarise under weights, penalise."""
from moalign.scalarization.constraints import Constraint, parse_constraint
from moalign.scalarization.directions import to_minimize
from moalign.scalarization.normalizers import FixedRangeNormalizer, IdentityNormalizer, RunningNormalizer, make_normalizer
from moalign.scalarization.scalarizers import SCALARIZERS, Scalarizer, validate_weights

__all__ = [
    "Constraint", "FixedRangeNormalizer", "IdentityNormalizer", "RunningNormalizer", "SCALARIZERS", "Scalarizer",
    "make_normalizer", "parse_constraint", "to_minimize", "validate_weights",
]
