"""A weight-conditioned policy: one policy for every trade-off, told the weights in its prompt.

Rewards-in-Context (Yang et al. 2024) and Panacea (Zhong et al. 2024) train one policy on
prompts that state the preference; Conditioned Language Policies (Wang et al. 2024) draw a weight
vector per prompt during training and score its completions under it, so that at test time any
weight vector selects a policy without more training. Here each prompt group gets its own vector,
drawn from a Dirichlet or from a fixed set and seeded by (seed, step) so that a resumed run draws
what the uninterrupted one did; the group's completions are scalarised under it
(`MultiObjectiveReward(batch, weights=...)`).

The weights reach the policy as text opening the user's message, ``[weights: chrf=0.70
verbosity=0.30]``, then the prompt on the next line: objective names and plain decimals, which
a chat model reads as it reads any instruction. Drawn weights are rounded to what the text shows
(hundredths that still sum to 1), so the policy is told exactly the weights that score it.
`condition_prompt` is the only place the template is written. Training writes it into each
group's prompt; everything after training (evaluation at one weight vector, a conditioned search's
policies, `moalign.load_policy`, `moalign generate`, exports) gets a tokenizer whose chat template
writes it (`conditioned_tokenizer`), so prompts stay themselves in every table and objective.
"""
from __future__ import annotations

import hashlib

import numpy as np

from moalign.rl.config import ConditioningConfig

DECIMALS = 2  # the precision the prompt states, hence of every weight a conditioned policy sees


def condition_prompt(prompt: str, names: list[str], weights) -> str:
    """The prompt a conditioned policy sees for `weights` (one per objective in `names`).

    >>> condition_prompt("Summarize: the council voted.", ["chrf", "verbosity"], [0.7, 0.3])
    '[weights: chrf=0.70 verbosity=0.30]\\nSummarize: the council voted.'
    """
    stated = " ".join(f"{name}={w:.{DECIMALS}f}" for name, w in zip(names, round_weights(weights)))
    return f"[weights: {stated}]\n{prompt}"


def round_weights(weights) -> np.ndarray:
    """Weights normalised and rounded to hundredths that sum to exactly 1 (largest remainder), so
    the text states the scalarisation's weights and not a near miss of them.

    >>> round_weights([1, 1, 1]).tolist()
    [0.34, 0.33, 0.33]
    """
    w = np.asarray(weights, dtype=float)
    units = 10**DECIMALS
    scaled = w / w.sum() * units
    whole = np.floor(scaled)
    short = int(units - whole.sum())
    whole[np.argsort(-(scaled - whole), kind="stable")[:short]] += 1  # ties go to the earlier objective
    return whole / units


def draw_weights(config: ConditioningConfig, m: int, n_groups: int, seed: int, step: int) -> np.ndarray:
    """[n_groups, m] weight vectors for `step`'s prompt groups, a pure function of (seed, step).

    >>> cfg = ConditioningConfig(enabled=True)
    >>> bool((draw_weights(cfg, 2, 4, seed=0, step=3) == draw_weights(cfg, 2, 4, seed=0, step=3)).all())
    True
    """
    digest = hashlib.sha256(f"conditioning:{seed}:{step}".encode()).hexdigest()[:16]
    rng = np.random.default_rng(int(digest, 16))  # its own stream: prompts and samples keep theirs
    if config.draw == "set":
        choices = np.asarray(config.weights, dtype=float)
        drawn = choices[rng.integers(len(choices), size=n_groups)]
    else:
        alpha = np.broadcast_to(np.asarray(config.alpha, dtype=float), (m,))
        drawn = rng.dirichlet(alpha, size=n_groups)
    return np.array([round_weights(w) for w in drawn])


def conditioned_tokenizer(tokenizer, names: list[str], weights):
    """A copy of `tokenizer` whose chat template states `weights` before every user message, so
    that whatever formats prompts through it (evaluation, `moalign generate`, `load_policy`, an
    exported model, the MLflow model) asks the conditioned policy for that trade-off, while each
    prompt stays itself everywhere else (objectives score it, fronts line policies up by it)."""
    return stating_tokenizer(tokenizer, condition_prompt("", names, weights))


def stating_tokenizer(tokenizer, statement: str):
    """A copy of `tokenizer` whose chat template writes `statement` before every user message (the
    weights of a conditioned policy, the targets of a Rewards-in-Context one).

    A tokenizer without a chat template gets one that writes the statement and the prompt (after
    the BOS token if the tokenizer adds one), the text training gave it.
    """
    import copy
    import json

    literal = json.dumps(statement)  # a Jinja string literal, escapes included
    original = tokenizer.chat_template
    if not original:
        bos = tokenizer.bos_token is not None and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]
        original = ("{{ bos_token }}" if bos else "") + "{% for message in messages %}{{ message['content'] }}{% endfor %}"
    # rebinds `messages` for the rest of the template; no whitespace is added before the original
    rewrite = ("{%- set ns = namespace(messages=[]) -%}{%- for message in messages -%}"
               "{%- if message['role'] == 'user' -%}"
               f"{{%- set ns.messages = ns.messages + [dict(message, content={literal} ~ message['content'])] -%}}"
               "{%- else -%}{%- set ns.messages = ns.messages + [message] -%}{%- endif -%}{%- endfor -%}"
               "{%- set messages = ns.messages %}")
    stated = copy.deepcopy(tokenizer)
    stated.chat_template = rewrite + original
    return stated
