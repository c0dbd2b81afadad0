"""A best-of-n policy: the base model samples n answers to each prompt and keeps the feasible one
that the weight vector's scalarisation ranks best (`moalign.selection.top_k`), the policy a
`best_of_n` search evaluates. It is a policy only where choosing needs no reference answer:
with chrF, BLEU or ROUGE among the reward's objectives it is an oracle ceiling, and building one
is refused (`check_reference_free`). It answers records (prompts with the fields its objectives
read), not token ids: `moalign generate` and `answer` use it."""
from __future__ import annotations

import pandas as pd

from moalign.errors import MoalignError


class BestOfN:
    def __init__(self, model, tokenizer, config, weights, n: float, temperature: float = 1.0, top_p: float = 1.0):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.weights, self.n, self.temperature, self.top_p = list(weights), int(n), float(temperature), float(top_p)
        self.generation_config = model.generation_config

    @staticmethod
    def check_reference_free(record) -> None:
        from moalign.rl.reward import MultiObjectiveReward

        reward = MultiObjectiveReward(record.config.reward)
        needs = [n for n, o in reward.all_objectives.items() if "references" in o.requires]
        if needs:
            raise MoalignError(f"best-of-n run {record.run_id} chooses by {', '.join(needs)}, which read(s) the reference "
                               f"answers: an oracle ceiling, not a policy that can answer a new prompt; its choices on "
                               f"the held-out prompts are the run's eval_samples.json")

    def eval(self) -> "BestOfN":
        self.model.eval()
        return self

    def generate(self, *args, **kwargs):
        raise MoalignError("a best-of-n policy answers records (prompts with the fields its objectives read), not "
                           "token ids: use moalign generate, or BestOfN.answer(records, max_new_tokens)")

    def answer(self, records: list[dict], max_new_tokens: int, use_chat_template: bool = True, seed: int = 0,
               batch_prompts: int = 8) -> list[str]:
        """One answer per record: n samples each, scored, the best feasible one kept. The ranking's
        statistics come from this call's samples: per prompt under `group` normalisation (the
        default for several objectives), so an answer depends on its own prompt's samples only;
        under `running` normalisation or a Chebyshev ideal point, on the prompts answered with it."""
        from moalign.rl.evaluation import batch_for
        from moalign.rl.reward import MultiObjectiveReward
        from moalign.rl.sampling import generate
        from moalign.scoring import score
        from moalign.selection import top_k

        reward = MultiObjectiveReward(self.config.reward)
        parts = []
        for start in range(0, len(records), batch_prompts):
            rows = list(range(start, min(start + batch_prompts, len(records))))
            rollout = generate(self.model, self.tokenizer, [records[i]["prompt"] for i in rows], self.n, max_new_tokens,
                               self.temperature, 0, self.top_p, use_chat_template, seed=seed + start)
            index = [rows[i] for i in rollout.prompt_index]
            scores = score(batch_for(records, index, rollout.texts, groups=index), reward.all_objectives)
            parts.append(pd.concat([pd.DataFrame({"prompt_index": index, "prompt": [records[i]["prompt"] for i in index],
                                                  "completion": rollout.texts}), scores.reset_index(drop=True)], axis=1))
        chosen = top_k(pd.concat(parts, ignore_index=True), self.config.reward, self.weights, 1, fallback=True)
        answers = chosen.set_index("prompt_index")["completion"].reindex(range(len(records)))
        if answers.isna().any():  # top_k answers every prompt with fallback: a gap would shift answers to other records
            raise MoalignError(f"best-of-n chose no answer for record {int(answers.isna().idxmax())}")
        return answers.tolist()
