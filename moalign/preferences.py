"""Weights from what a user prefers: most people cannot say "0.7 chrF, 0.3 brevity", but they can
say which of two answers they like better.

Judgements compare two policies of a front on one held-out prompt (`a`, `b`, `winner`: a, b or
tie). Each becomes the difference of the two answers' scores on that prompt, per objective, in the
front's normalised units (each objective over its spread across the front's answers, signed so
that more is better): d. A Bradley-Terry model says P(a preferred) = sigmoid(v . d) with v >= 0;
the inferred weights are w = v / sum(v) (the simplex), v's size is how consistently the rater
follows them. Ties count half a win each way. The fit is maximum likelihood with a small ridge,
by L-BFGS-B with v's bounds (scipy). The interval of each weight comes from refitting on redrawn
judgements (a percentile bootstrap); a share of the judgements is held back to say how well the fit
predicts judgements it did not see; the front policy whose weights are nearest (L1) is the one to
use. Contradictory or one-sided labels leave v near 0 or the bootstrap wide, and the result says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from moalign.errors import MoalignError

WINNERS = {"a": 1.0, "b": 0.0, "tie": 0.5}
MIN_JUDGEMENTS = 10
RIDGE = 1e-3


@dataclass
class FrontAnswers:
    """The front's answers to its held-out prompts: `scores[policy, prompt, objective]` (seeds
    averaged), with `policies` (keys: 'base' or weights as '0.5000,0.5000'), `prompts`, the
    answers' text `completions[policy][prompt]`, and each policy's weights."""

    names: list[str]
    directions: list[str]
    policies: list[str]
    prompts: list[str]
    scores: np.ndarray
    completions: dict
    weights: dict  # policy -> weight vector (None for the base model)
    refs: dict = field(default_factory=dict)  # policy -> its reference (EXPERIMENT/SEARCH@W)
    feasible: set = field(default_factory=set)  # the policies on the front (feasible under the constraints)

    @classmethod
    def from_search(cls, search, prefix: str = "") -> "FrontAnswers":
        """From a search read back from MLflow (`moalign.reports.collect.Search`)."""
        from moalign.pareto.uncertainty import prompt_means

        X = search.scores.X
        if X is None:
            raise MoalignError(f"search {search.name}: its runs logged no per-prompt scores to compare answers by")
        cols = [search.scores.objectives.index(n) for n in search.objectives]
        table = search.policies.reset_index(drop=True)
        keys = ["base" if r == "base" else w for r, w in zip(table["role"], table["weights"])]
        first = next(t for t in search.run_samples.values() if t is not None)
        prompts = list(prompt_means(first, search.objectives).index)
        completions = {}
        for key, (role, weights) in zip(keys, zip(table["role"], table["weights"])):
            label = role if not weights else f"{role} w=" + "/".join(f"{float(w):g}" for w in weights.split(","))
            sample = search.samples.get(label)
            completions[key] = sample.groupby("prompt", sort=False)["completion"].first().to_dict() if sample is not None else {}
        weights = {k: None if k == "base" else [float(x) for x in k.split(",")] for k in keys}
        feasible = {k for k, ok in zip(keys, search.feasible) if ok}
        return cls(list(search.objectives), [search.directions[n] for n in search.objectives], keys, prompts,
                   np.nanmean(X[..., cols], axis=1), completions, weights,
                   {k: f"{prefix}@{k}" for k in keys} if prefix else {}, feasible)

    def features(self, judgements: pd.DataFrame) -> np.ndarray:
        """d for each judgement: score(a) - score(b) on its prompt, per objective, normalised and signed."""
        sign = np.array([1.0 if d == "maximize" else -1.0 for d in self.directions])
        spread = np.nanstd(self.scores.reshape(-1, len(self.names)), axis=0)
        spread = np.where(spread > 0, spread, 1.0)
        p = {k: i for i, k in enumerate(self.policies)}
        q = {k: i for i, k in enumerate(self.prompts)}
        a = self.scores[[p[x] for x in judgements["a"]], [q[x] for x in judgements["prompt"]]]
        b = self.scores[[p[x] for x in judgements["b"]], [q[x] for x in judgements["prompt"]]]
        return (a - b) * sign / spread

    def pairs(self, n: int, seed: int = 0) -> pd.DataFrame:
        """`n` pairs to judge: on distinct prompts where possible, the two policies whose answers
        differ most in normalised scores, so each judgement says the most about the weights."""
        rng = np.random.default_rng(seed)
        keys = [k for k in self.policies if self.completions.get(k)]
        spread = np.nanstd(self.scores.reshape(-1, len(self.names)), axis=0)
        spread = np.where(spread > 0, spread, 1.0)
        rows = []
        for j, prompt in enumerate(self.prompts):
            for x in range(len(keys)):
                for y in range(x + 1, len(keys)):
                    i, k = self.policies.index(keys[x]), self.policies.index(keys[y])
                    gap = float(np.nansum(np.abs(self.scores[i, j] - self.scores[k, j]) / spread))
                    a, b = self.completions[keys[x]].get(prompt), self.completions[keys[y]].get(prompt)
                    if a is not None and b is not None and a != b:
                        rows.append((gap, prompt, keys[x], keys[y]))
        rows.sort(key=lambda r: -r[0])
        chosen, seen = [], set()
        for gap, prompt, a, b in rows:  # one pair a prompt first, then the rest by disagreement
            if prompt not in seen:
                chosen.append((prompt, a, b))
                seen.add(prompt)
        first = set(chosen)
        chosen += [(p, a, b) for _, p, a, b in rows if (p, a, b) not in first]
        chosen = chosen[:n]
        flips = rng.random(len(chosen)) < 0.5  # which answer is shown first: no side wins by position
        return pd.DataFrame([{"prompt": p, "a": (b if f else a), "b": (a if f else b),
                              "completion_a": self.completions[b if f else a][p],
                              "completion_b": self.completions[a if f else b][p]}
                             for (p, a, b), f in zip(chosen, flips)])


def read_labels(path: str | Path, answers: FrontAnswers) -> pd.DataFrame:
    """Judgements from JSON lines {"prompt", "a", "b", "winner"} (a and b: 'base' or a policy's
    weights as the front lists them; winner: a, b or tie), each line checked, one line on error."""
    from moalign.data import read_text

    path = Path(path)
    if not path.is_file():
        raise MoalignError(f"{path}: no such labels file")
    rows = []
    known = {_norm(k): k for k in answers.policies}
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MoalignError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
        if not isinstance(record, dict) or any(k not in record for k in ("prompt", "a", "b", "winner")):
            raise MoalignError(f"{path}:{lineno}: expected an object with prompt, a, b and winner")
        if record["winner"] not in WINNERS:
            raise MoalignError(f"{path}:{lineno}: winner must be a, b or tie, got {record['winner']!r}")
        for side in ("a", "b"):
            if _norm(record[side]) not in known:
                raise MoalignError(f"{path}:{lineno}: {side} {record[side]!r} is no policy of the front "
                                   f"(its policies: {', '.join(answers.policies)})")
        if record["prompt"] not in answers.prompts:
            raise MoalignError(f"{path}:{lineno}: the prompt is none of the front's held-out prompts")
        if _norm(record["a"]) == _norm(record["b"]):
            raise MoalignError(f"{path}:{lineno}: a and b are the same policy")
        rows.append({"prompt": record["prompt"], "a": known[_norm(record["a"])], "b": known[_norm(record["b"])],
                     "winner": record["winner"]})
    if not rows:
        raise MoalignError(f"{path}: no judgements in the file")
    return pd.DataFrame(rows)


def _norm(policy) -> str:
    """'base', or weights to 4 decimals ('0.5,0.5' and '0.5000,0.5000' are one policy)."""
    text = str(policy).strip()
    if text == "base":
        return text
    try:
        return ",".join(f"{float(w):.4f}" for w in text.split(","))
    except ValueError:
        return text


def fit(d: np.ndarray, y: np.ndarray) -> np.ndarray:
    """v >= 0 maximising the Bradley-Terry likelihood of outcomes `y` (1: a, 0: b, 0.5: tie) given
    score differences `d`, with a small ridge so that a separable or empty signal stays finite."""
    from scipy.optimize import minimize

    def loss(v):
        z = d @ v
        nll = np.logaddexp(0, z) - y * z  # -[y log s(z) + (1 - y) log(1 - s(z))]
        grad = d.T @ (1 / (1 + np.exp(-z)) - y)
        return nll.sum() + RIDGE * len(y) * v @ v, grad + 2 * RIDGE * len(y) * v

    start = np.full(d.shape[1], 0.1)
    return minimize(loss, start, jac=True, method="L-BFGS-B", bounds=[(0, None)] * d.shape[1]).x


@dataclass
class InferredWeights:
    names: list[str]
    weights: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int  # judgements the fit rests on
    strength: float  # sum(v): how sharply the rater follows the weights (near 0: no signal)
    heldout_accuracy: float  # share of held-back decisive judgements the fit predicts (NaN: none held back)
    heldout_n: int
    nearest: str | None  # the front policy with the nearest weights, and its reference
    nearest_ref: str | None
    note: str  # what the numbers allow

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"objective": self.names, "weight": self.weights, "ci_low": self.low, "ci_high": self.high})


def infer_weights(judgements: pd.DataFrame, answers: FrontAnswers, n_boot: int = 500, holdout: float = 0.2,
                  seed: int = 0) -> InferredWeights:
    """The weights a rater's judgements imply (module docstring)."""
    n = len(judgements)
    if n < MIN_JUDGEMENTS:
        raise MoalignError(f"{n} judgements: at least {MIN_JUDGEMENTS} are needed to infer {len(answers.names)} weights")
    d = answers.features(judgements)
    y = judgements["winner"].map(WINNERS).to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_held = int(round(n * holdout)) if n * holdout >= 5 else 0
    held, train = order[:n_held], order[n_held:]
    v_train = fit(d[train], y[train])
    decisive = held[y[held] != 0.5]
    accuracy = float(np.mean((d[decisive] @ v_train > 0) == (y[decisive] == 1))) if len(decisive) else float("nan")
    v = fit(d, y)  # the estimate uses every judgement
    weights = _simplex(v)
    draws = [_simplex(fit(d[idx], y[idx])) for idx in (rng.integers(0, n, n) for _ in range(n_boot))]
    low, high = np.nanpercentile(np.array(draws), [2.5, 97.5], axis=0)
    nearest = _nearest(weights, answers)
    width = float(np.max(high - low))
    decisive_share = float(np.mean(y != 0.5))
    p_value = _no_signal_p(d, y, v)
    if p_value > 0.05:
        note = (f"the judgements pin nothing down: no weights explain them better than coin flips (likelihood-ratio "
                f"p = {p_value:.2f}); contradictory, one-sided or too few")
    elif width > 0.6:
        note = (f"the judgements pin the weights down loosely (interval widths up to {width:.2f}); more judgements "
                f"would narrow them")
    else:
        note = f"{n} judgements ({decisive_share:.0%} decisive); intervals are 95% bootstrap intervals over judgements"
    return InferredWeights(answers.names, weights, low, high, n, float(v.sum()), accuracy, len(decisive),
                           nearest, answers.refs.get(nearest) if nearest else None, note)


def _no_signal_p(d: np.ndarray, y: np.ndarray, v: np.ndarray) -> float:
    """p-value of the likelihood-ratio test of "no weights at all" (every judgement a coin flip):
    twice the log-likelihood gain of the fit, against a chi-square with one degree per objective
    (conservative: v's bounds make the true null distribution a mixture with fewer degrees)."""
    from scipy.stats import chi2

    z = d @ v
    gain = float(np.sum(y * z - np.logaddexp(0, z)) + len(y) * np.log(2))
    return float(chi2.sf(2 * max(gain, 0.0), df=d.shape[1]))


def _simplex(v: np.ndarray) -> np.ndarray:
    total = v.sum()
    return v / total if total > 1e-12 else np.full(len(v), np.nan)


def _nearest(weights: np.ndarray, answers: FrontAnswers) -> str | None:
    if not np.isfinite(weights).all():
        return None
    trained = {k: np.asarray(w) for k, w in answers.weights.items()
               if w is not None and (not answers.feasible or k in answers.feasible)}
    return min(trained, key=lambda k: np.abs(trained[k] - weights).sum()) if trained else None


def load_front(search: str, tracking_uri: str | None = None):
    """(FrontAnswers, tracker, parent run) of ``EXPERIMENT/SEARCH`` (its latest run)."""
    from moalign.policies import _search_parent
    from moalign.reports.collect import load_search
    from moalign.tracking import MlflowTracker

    experiment, _, name = search.rpartition("/")
    if not experiment or not name:
        raise MoalignError(f"search {search!r}: expected EXPERIMENT/SEARCH")
    tracker = MlflowTracker(None, tracking_uri)
    parent = _search_parent(tracker, experiment, name)
    return FrontAnswers.from_search(load_search(tracker, parent, finished_only=True), prefix=search), tracker, parent


def log_preferences(tracker, parent, judgements: pd.DataFrame, result: InferredWeights) -> str:
    """A child run of the search (role `preferences`): the judgements as a table, the inferred
    weights as params and metrics (with their intervals), the nearest policy as a tag."""
    run_id = tracker.start_run("preferences", {"moalign.role": "preferences", "moalign.kind": "preferences",
                                               **({"moalign.nearest": result.nearest_ref} if result.nearest_ref else {})},
                               parent.info.run_id)
    try:
        tracker.log_params(run_id, {**{f"weight/{n}": f"{w:.4f}" for n, w in zip(result.names, result.weights)},
                                    "n_judgements": result.n})
        metrics = {"n_judgements": result.n, "strength": result.strength, "heldout_accuracy": result.heldout_accuracy,
                   "heldout_n": result.heldout_n}
        for n, w, lo, hi in zip(result.names, result.weights, result.low, result.high):
            metrics.update({f"weight/{n}": w, f"weight/{n}/ci_low": lo, f"weight/{n}/ci_high": hi})
        tracker.log_metrics(run_id, [(0, {k: v for k, v in metrics.items() if np.isfinite(v)})])
        tracker.log_table(run_id, judgements, "judgements.json")
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    tracker.end_run(run_id, "FINISHED")
    return run_id


def infer_weights_for(search: str, labels, tracking_uri: str | None = None, log: bool = True,
                      n_boot: int = 500) -> InferredWeights:
    """The weights behind judgements (`labels`: a JSON-lines file or a DataFrame with prompt, a,
    b, winner) of the front of ``EXPERIMENT/SEARCH``, logged as a run under the search (`log`)."""
    answers, tracker, parent = load_front(search, tracking_uri)
    if isinstance(labels, pd.DataFrame):
        judgements = labels[["prompt", "a", "b", "winner"]].copy()
        judgements["a"], judgements["b"] = judgements["a"].map(_norm), judgements["b"].map(_norm)
        unknown = sorted((set(judgements["a"]) | set(judgements["b"])) - set(answers.policies))
        if unknown or not judgements["winner"].isin(list(WINNERS)).all():
            raise MoalignError(f"judgements: unknown policies {unknown} or winners other than a, b, tie")
        if not judgements["prompt"].isin(answers.prompts).all() or (judgements["a"] == judgements["b"]).any():
            raise MoalignError("judgements: a prompt none of the front's held-out prompts, or a = b")
    else:
        judgements = read_labels(labels, answers)
    result = infer_weights(judgements, answers, n_boot=n_boot)
    if log:
        log_preferences(tracker, parent, judgements, result)
    return result
