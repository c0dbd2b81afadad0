"""Best-of-n: a front without training. Each held-out prompt gets n samples from the base model
(one pool per seed, shared by every weight vector), and the policy at weights w answers each
prompt with its feasible sample that w's scalarisation ranks best (`moalign.selection.top_k`; a
prompt with no feasible sample keeps its least violating one).

It is the yardstick of every trained front: what sampling n times and choosing buys, at n times
the generation cost of one answer and no training. Whether it is a policy depends on what chooses:
with reference-free objectives (likelihood, factuality, toxicity, verbosity, diversity,
extractiveness) it is one (`moalign generate` samples n and chooses); with reference-based ones
(chrF, BLEU, ROUGE) it reads the answer to choose, so it is an *oracle ceiling*: front.csv, the
report and the plots mark it, and no comparison mixes it with another method's front.

Children: the pool (`pool:eval:s<seed>`, a helper) and one evaluation child per weight vector
(role `best_of_n`, key `best_of_n:<weights>:s<seed>`, tag `moalign.endpoints` naming the pool run).
"""
from __future__ import annotations

from moalign.pareto.strategies.pooled import Pooled

ROLE = "best_of_n"


class BestOfN(Pooled):
    name = "best_of_n"
    split = "eval"

    def next_units(self, done):
        units = []
        for seed in self.config.training_seeds:
            pool = self.pool_unit(seed)
            if pool.key not in done:
                units.append(pool)
                continue
            row = done[pool.key]
            units += self.evaluations(ROLE, row, seed, done)
        return units

    @property
    def oracle(self) -> bool:
        """Whether choosing reads references (chrF, BLEU, ROUGE): a choice no policy could make on a
        new prompt, so the front is a ceiling, not policies. (Fine-tuning on samples chosen that way,
        as `rejection` does on training prompts, is no oracle: the references are training data.)"""
        from moalign.rl.reward import MultiObjectiveReward

        reward = MultiObjectiveReward(self.config.train.reward)
        return any("references" in o.requires for o in reward.all_objectives.values())

    def chosen(self, units):
        if units[0].role != ROLE:
            return None
        return self._choose(units)

    def _choose(self, units):
        from moalign.pool import read_pool
        from moalign.selection import top_k

        pool = read_pool(units[0].source_dirs[0])
        scored = [c for c in pool.columns if c not in ("prompt_index", "sample", "prompt", "completion",
                                                        "completion_tokens", "sequence_tokens", "seconds")]
        for unit in units:
            picked = top_k(pool, self.config.train.reward, unit.weights, 1, fallback=True)
            samples = picked[["prompt", "completion", *scored]].reset_index(drop=True)
            extra = {"best_of_n/n": self.options.n, "best_of_n/feasible_share": float(picked["feasible"].mean()),
                     "best_of_n/oracle": float(self.oracle)}
            yield unit, samples, extra


STRATEGY = BestOfN
