"""Training configuration: one dataclass per component, validated in `__post_init__`.

YAML maps onto these sections (`model:`, `data:`, `sampling:`, ...); `--set section.key=value`
overrides one field; unknown keys are errors naming the key (see `moalign.config.from_dict`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from moalign.data import quickstart_data
from moalign.errors import ConfigError
from moalign.rl.kl import ESTIMATORS, check_anchor

ALGORITHMS = ("reinforce", "rloo", "grpo")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _finite(value, key: str) -> None:
    """NaN and infinity pass every `>` check by accident or crash mid-run; refuse them by name."""
    _check(value is None or math.isfinite(value), f"{key} must be a finite number, got {value!r}")


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # HF id, local directory, or the bundled GGUF's name
    lora: bool = True  # LoRA adapters; the reference is the same network with adapters disabled
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | str | None = "all-linear"
    # The base model's dropout off (TRL's disable_dropout): the same tokens then get the same log-probs
    # in every pass (ratio, KL anchor). Models that train without dropout (Llama, Qwen, SmolLM2) are
    # unchanged; GPT-2 and OPT draw dropout otherwise. LoRA's own is lora_dropout.
    disable_dropout: bool = False
    dtype: str = "float32"  # weights' dtype (auto: bfloat16 on CUDA, float32 elsewhere); bf16 autocast on GPU is optim.bf16
    # sdpa | eager | flash_attention_2; None: transformers' default (SDPA wherever the model has it)
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    use_chat_template: bool = True
    # Warm start: train on from this adapter (a run's `adapter/` folder; model.pt for full fine-tuning)
    # instead of a fresh LoRA; the reference stays the base model. Part of a run's train_hash.
    init_adapter: str | None = None

    def __post_init__(self):
        _check(bool(self.name), "model.name is required")
        _check(self.lora_r >= 1, f"model.lora_r must be >= 1, got {self.lora_r}")
        _finite(self.lora_alpha, "model.lora_alpha")
        _check(self.lora_alpha > 0, f"model.lora_alpha must be > 0, got {self.lora_alpha}")
        _check(0 <= self.lora_dropout < 1, f"model.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        _check(self.dtype in ("auto", "float32", "bfloat16", "float16"),
               f"model.dtype must be auto|float32|bfloat16|float16, got {self.dtype!r}")
        _check(self.attn_implementation in (None, "sdpa", "eager", "flash_attention_2"),
               f"model.attn_implementation must be sdpa|eager|flash_attention_2 or null, got {self.attn_implementation!r}")


@dataclass
class DataConfig:
    train: str = ""  # JSONL/CSV with `prompt` and whatever fields the objectives need
    eval: str | None = None  # held-out prompts; default: a seeded split of `train`
    eval_fraction: float = 0.2
    max_eval_prompts: int = 64
    # The held-out split's own seed, not the training seed: runs with other training seeds must be
    # evaluated on the same prompts, or their scores do not compare.
    split_seed: int = 0
    # Training prompts held out as a validation split (0: none): not trained on, evaluated after
    # training (`val/<objective>` metrics, up to max_eval_prompts of them). A search that chooses
    # what to train from its results (adaptive) decides on these, never on the held-out prompts
    # its front is reported on.
    validation_fraction: float = 0.0

    def __post_init__(self):
        _check(bool(self.train), "data.train is required (a JSONL or CSV file of prompts)")
        _check(0.0 < self.eval_fraction < 1.0, f"data.eval_fraction must be in (0, 1), got {self.eval_fraction}")
        _finite(self.validation_fraction, "data.validation_fraction")
        _check(0.0 <= self.validation_fraction < 1.0,
               f"data.validation_fraction must be in [0, 1) (0: no validation split), got {self.validation_fraction}")
        _check(self.max_eval_prompts >= 1, f"data.max_eval_prompts must be >= 1, got {self.max_eval_prompts}")


@dataclass
class SamplingConfig:
    num_generations: int = 4  # completions per prompt: a group (RLOO/GRPO baselines need >= 2)
    prompts_per_step: int = 4
    max_new_tokens: int = 32
    temperature: float = 1.0
    # Truncation of held-out sampling (eval_temperature > 0); RL training refuses it (see TrainConfig):
    # the loss and the KL estimators differentiate the untruncated distribution
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    eval_num_generations: int = 1
    eval_temperature: float = 0.0  # 0: greedy, so policies compare on the same footing
    # CUDA: decode with a static KV cache, which transformers compiles (torch.compile) on first use;
    # pays off over many steps of one shape. Ignored on CPU, where the shared-prompt path is faster.
    static_cache: bool = False

    def __post_init__(self):
        _check(self.num_generations >= 1, "sampling.num_generations must be >= 1")
        _check(self.prompts_per_step >= 1, "sampling.prompts_per_step must be >= 1")
        _check(self.max_new_tokens >= 1, "sampling.max_new_tokens must be >= 1")
        _finite(self.temperature, "sampling.temperature")
        _check(self.temperature > 0, "sampling.temperature must be > 0")
        _check(0 < self.top_p <= 1, f"sampling.top_p must be in (0, 1], got {self.top_p}")
        _check(self.top_k >= 0, f"sampling.top_k must be >= 0 (0: off), got {self.top_k}")
        _check(self.eval_num_generations >= 1, f"sampling.eval_num_generations must be >= 1, got {self.eval_num_generations}")
        _finite(self.eval_temperature, "sampling.eval_temperature")
        _check(self.eval_temperature >= 0, f"sampling.eval_temperature must be >= 0 (0: greedy), got {self.eval_temperature}")


@dataclass
class RewardConfig:
    objectives: dict = field(default_factory=lambda: {"verbosity": {}})  # {column: {param: value, type: name}}
    weights: list[float] | None = None  # one per objective; default equal
    scalarizer: str = "weighted_sum"  # weighted_sum | chebyshev | augmented_chebyshev | pbi
    # auto (default): group when the reward has more than one objective and prompts have groups of
    # completions (GDPO), else running | running (z-score) | fixed (ranges) | group (z-score within
    # each prompt's completions, as TRL's normalize_then_sum) | none (raw units)
    normalization: str = "auto"
    ranges: dict = field(default_factory=dict)  # {objective: [low, high]} for fixed normalization (constrained ones too)
    constraints: list[str] = field(default_factory=list)  # e.g. ["toxicity <= 0.1"]; at most one per objective
    # lagrangian: reward -= lambda * (value - threshold), lambda learnt by dual ascent | penalty: reward -=
    # constraint_penalty * violation. Gaps in normalised units: / running std (running, group), / range (fixed), raw (none)
    constraint_method: str = "lagrangian"
    constraint_penalty: float = 5.0  # penalty: the fixed multiplier of the normalised violation
    lagrange_lr: float = 0.1  # lagrangian: lambda += lr * the batch's mean normalised gap, once per step
    lagrange_init: float = 0.0  # lagrangian: lambda at step 0 (0: a constraint costs nothing until it is broken)
    lagrange_max: float = 10.0  # lagrangian: lambda's cap, so an unreachable constraint cannot swamp the reward
    pbi_theta: float = 5.0
    augment_rho: float = 0.05
    # weights that change over training (moalign/rl/schedule.py): {kind: linear|cosine|constant|piecewise,
    # start, end, steps, points}; None: `weights` throughout
    weight_schedule: dict | None = None

    def __post_init__(self):
        from moalign.scalarization import CONSTRAINT_METHODS, NORMALIZATIONS, SCALARIZERS

        if isinstance(self.objectives, (list, tuple)):
            self.objectives = {str(name): {} for name in self.objectives}
        elif isinstance(self.objectives, str):
            self.objectives = {n.strip(): {} for n in self.objectives.split(",") if n.strip()}
        _check(isinstance(self.objectives, dict) and len(self.objectives) > 0, "reward.objectives: give at least one objective")
        if isinstance(self.constraints, str):
            self.constraints = [self.constraints]
        for key, choices in (("scalarizer", SCALARIZERS), ("normalization", ("auto",) + NORMALIZATIONS),
                             ("constraint_method", CONSTRAINT_METHODS)):
            value = getattr(self, key)
            _check(value in choices, f"reward.{key} must be one of {' | '.join(choices)}, got {value!r}")
        for key in ("constraint_penalty", "lagrange_lr", "lagrange_init", "lagrange_max", "pbi_theta", "augment_rho"):
            value = getattr(self, key)
            _check(isinstance(value, (int, float)) and 0 <= value < float("inf"),  # NaN fails too
                   f"reward.{key} must be a finite number >= 0, got {value!r}")
        _check(self.lagrange_lr > 0, f"reward.lagrange_lr must be > 0, got {self.lagrange_lr}")
        _check(self.lagrange_max > 0, f"reward.lagrange_max must be > 0, got {self.lagrange_max}")
        _check(self.lagrange_init <= self.lagrange_max,
               f"reward.lagrange_init ({self.lagrange_init}) must be <= reward.lagrange_max ({self.lagrange_max})")
        if self.weight_schedule is not None:
            self.schedule()  # its keys and values, now; its vectors against the objectives in TrainConfig

    def schedule(self, total_steps: int | None = None):
        """The weight schedule (`moalign.rl.schedule`), resolved against the objectives when
        `total_steps` is given; None without one."""
        if self.weight_schedule is None:
            return None
        from moalign.config import from_dict
        from moalign.rl.schedule import WeightSchedule

        parsed = from_dict(WeightSchedule, self.weight_schedule, "reward.weight_schedule")
        return parsed if total_steps is None else parsed.resolve(list(self.objectives), self.weights, total_steps)

    def resolve_normalization(self, group_size: int | None = None) -> str:
        """`auto` made concrete: `group` (GDPO; TRL's `normalize_then_sum`) when the reward has more
        than one objective (whatever their weights, so a search's points share one normalisation)
        and samples come in groups of one prompt's completions, since one
        objective's spread then cannot drown the others'; else `running`. Set in place, so the
        logged config says which was used."""
        if self.normalization == "auto":
            several = len(self.objectives) > 1
            self.normalization = "group" if several and (group_size is None or group_size > 1) else "running"
        return self.normalization


@dataclass
class AlgorithmConfig:
    name: str = "rloo"  # reinforce | rloo | grpo
    kl_coef: float = 0.05  # anchor to the reference policy
    kl_estimator: str = "k3"  # k1 | k2 | k3 (see moalign/rl/kl.py for what each anchors to, by placement)
    kl_in_reward: bool = False  # True: subtract kl_coef * KL(seq) from the reward (k1 only); False: add to the loss
    target_kl: float | None = None  # adaptive KL controller target (per-token KL); None: fixed kl_coef
    kl_horizon: int = 100  # adaptive controller's horizon in steps
    clip_eps: float | None = 0.2  # PPO clipped ratio, active when inner_epochs > 1 (anchor to current policy)
    inner_epochs: int = 1  # optimisation passes over each batch of samples
    baseline_decay: float = 0.9  # REINFORCE moving-average baseline
    scale_rewards: bool = True  # GRPO: divide by the group's std

    def __post_init__(self):
        _check(self.name in ALGORITHMS, f"algorithm.name must be one of {', '.join(ALGORITHMS)}, got {self.name!r}")
        _check(self.kl_estimator in ESTIMATORS, f"algorithm.kl_estimator must be one of {'|'.join(ESTIMATORS)}, got {self.kl_estimator!r}")
        check_anchor(self.kl_estimator, self.kl_in_reward)
        for key in ("kl_coef", "target_kl", "clip_eps", "baseline_decay"):
            _finite(getattr(self, key), f"algorithm.{key}")
        _check(self.kl_coef >= 0, f"algorithm.kl_coef must be >= 0, got {self.kl_coef}")
        _check(self.inner_epochs >= 1, f"algorithm.inner_epochs must be >= 1, got {self.inner_epochs}")
        _check(self.target_kl is None or self.target_kl > 0, f"algorithm.target_kl must be > 0, got {self.target_kl}")
        _check(self.kl_horizon >= 1, f"algorithm.kl_horizon must be >= 1, got {self.kl_horizon}")
        _check(self.clip_eps is None or 0 < self.clip_eps < 1, f"algorithm.clip_eps must be in (0, 1) or null, got {self.clip_eps}")
        _check(0 <= self.baseline_decay < 1, f"algorithm.baseline_decay must be in [0, 1), got {self.baseline_decay}")


@dataclass
class OptimConfig:
    steps: int = 20
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    micro_batch_size: int = 16  # samples per forward/backward; gradients accumulate over a step
    share_prompt_prefix: bool = True  # run each group's shared prompt through the network once
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on CPU)

    def __post_init__(self):
        for key in ("lr", "weight_decay", "max_grad_norm"):
            _finite(getattr(self, key), f"optim.{key}")
        _check(self.steps >= 1, f"optim.steps must be >= 1, got {self.steps}")
        _check(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        # A negative warm-up would give a negative learning rate (training backwards), a negative
        # clipping norm would flip the gradient: both are refused rather than "handled".
        _check(self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(self.max_grad_norm > 0, f"optim.max_grad_norm must be > 0, got {self.max_grad_norm}")
        _check(self.micro_batch_size >= 1, f"optim.micro_batch_size must be >= 1, got {self.micro_batch_size}")


DRAWS = ("dirichlet", "set")


@dataclass
class ConditioningConfig:
    """One policy for every trade-off (Rewards-in-Context, Panacea, Conditioned Language Policies):
    each prompt group is trained under its own weight vector, which scores its completions and is
    stated in its prompt (`moalign/rl/conditioning.py` holds the one template)."""

    enabled: bool = False
    draw: str = "dirichlet"  # dirichlet: w ~ Dir(alpha) per prompt group | set: one of `weights`, uniformly
    alpha: Any = 1.0  # dirichlet concentration: one number, or a list of one per objective (1: uniform on the simplex)
    weights: list[list[float]] | None = None  # set: the weight vectors drawn from, one weight per objective each
    given: str = "prompt"  # prompt: "[weights: chrf=0.70 verbosity=0.30]" opens the user's message

    def __post_init__(self):
        _check(self.draw in DRAWS, f"conditioning.draw must be one of {' | '.join(DRAWS)}, got {self.draw!r}")
        _check(self.given == "prompt", f"conditioning.given must be 'prompt' (weights stated in the prompt), got {self.given!r}")
        alphas = self.alpha if isinstance(self.alpha, (list, tuple)) else [self.alpha]
        _check(len(alphas) > 0 and all(isinstance(a, (int, float)) and not isinstance(a, bool) and 0 < a < float("inf")
                                       for a in alphas),  # NaN fails too
               f"conditioning.alpha must be a finite number > 0 or a list of them, got {self.alpha!r}")
        if self.draw == "set":
            _check(isinstance(self.weights, (list, tuple)) and len(self.weights) > 0,
                   "conditioning.weights: draw 'set' needs a list of weight vectors, e.g. [[1, 0], [0.5, 0.5], [0, 1]]")

    def check_objectives(self, m: int) -> None:
        """Sizes depend on the reward's objectives: one alpha (or one in all) and one weight per objective."""
        if isinstance(self.alpha, (list, tuple)):
            _check(len(self.alpha) == m, f"conditioning.alpha: got {len(self.alpha)} values for {m} objectives")
        for i, w in enumerate(self.weights if self.draw == "set" else []):
            numbers = isinstance(w, (list, tuple)) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in w)
            _check(numbers and len(w) == m and all(0 <= x < float("inf") for x in w) and sum(w) > 0,
                   f"conditioning.weights[{i}]: expected {m} non-negative weights (one per objective), not all 0, got {w!r}")


SELECTIONS = ("top_k", "rewards_in_context")


@dataclass
class SupervisedConfig:
    """Supervised fine-tuning on a pool of scored samples instead of RL (`moalign/rl/supervised.py`):
    `top_k` keeps the k best feasible samples of each prompt under `reward.weights` (rejection
    sampling fine-tuning: RAFT, ReST); `rewards_in_context` keeps every feasible sample and states
    its scores in its prompt (Rewards-in-Context), so that one run serves every weight vector."""

    enabled: bool = False
    pool: str | None = None  # the pool table (a pool run's pool.parquet, see moalign/pool.py)
    select: str = "top_k"  # top_k | rewards_in_context
    top_k: int = 1  # top_k: samples kept per prompt, best scalarised first, feasible ones only
    epochs: int = 2  # passes over the selected samples
    batch_size: int = 8  # samples per optimizer step
    lr: float | None = None  # None: optim.lr
    # > 0: plus kl_coef x the exact per-token KL(policy || reference) on the training tokens, as Quark
    # anchors its reward-token fine-tuning; 0: plain maximum likelihood on the completions
    kl_coef: float = 0.0
    # rewards_in_context, online augmentation (RiC's online stage): pools an earlier round of this
    # policy sampled while asked for the front's targets (`PoolSpec.ask`). Their samples join the
    # pool's, each stated with the scores it got; of each source only the samples with some
    # objective at or above that source's `online_quantile` are kept (RiC's multi-objective
    # rejection sampling, which keeps the training set near the front)
    online_pools: list[str] = field(default_factory=list)
    online_quantile: float = 0.7

    def __post_init__(self):
        _check(self.select in SELECTIONS, f"supervised.select must be one of {' | '.join(SELECTIONS)}, got {self.select!r}")
        for key in ("top_k", "epochs", "batch_size"):
            value = getattr(self, key)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                   f"supervised.{key} must be an integer >= 1, got {value!r}")
        _finite(self.lr, "supervised.lr")
        _check(self.lr is None or self.lr > 0, f"supervised.lr must be > 0, got {self.lr}")
        _finite(self.kl_coef, "supervised.kl_coef")
        _check(self.kl_coef >= 0, f"supervised.kl_coef must be >= 0, got {self.kl_coef}")
        _check(not self.enabled or bool(self.pool), "supervised.pool is required with supervised.enabled "
               "(a pool table: a search's pool run writes pool.parquet)")
        _check(isinstance(self.online_pools, list) and all(isinstance(p, str) and p for p in self.online_pools),
               f"supervised.online_pools must be a list of pool table paths, got {self.online_pools!r}")
        _check(not self.online_pools or self.select == "rewards_in_context",
               "supervised.online_pools: only select rewards_in_context states the scores each sample got")
        _finite(self.online_quantile, "supervised.online_quantile")
        _check(0 <= self.online_quantile < 1, f"supervised.online_quantile must be in [0, 1), got {self.online_quantile}")


@dataclass
class TrackingConfig:
    enabled: bool = True
    experiment: str = "moalign"
    run_name: str | None = None
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the cwd
    samples_every: int = 10  # log a table of sample generations every K steps
    log_adapter: bool = True


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(train=quickstart_data()))
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)  # one weight-conditioned policy
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)  # fine-tune on a sample pool instead of RL
    eval_objectives: dict = field(default_factory=dict)  # scored at evaluation only, beside the reward's
    seed: int = 0
    output_dir: str = "moalign_runs"  # checkpoints and adapters, one folder per run
    checkpoint_every: int = 10
    progress: bool = True

    def __post_init__(self):
        _check(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        self.reward.resolve_normalization(self.sampling.num_generations)
        if not self.supervised.enabled:  # RL differentiates log-probs of the samples it draws
            _check(self.sampling.top_k == 0 and self.sampling.top_p == 1.0,
                   "sampling.top_k and sampling.top_p must stay 0 and 1 for RL training: they truncate what training "
                   "samples while the loss and the KL anchor differentiate the whole distribution (off-policy); to "
                   "sample a trained policy that way, give them to moalign generate --set")
        if self.algorithm.name in ("rloo", "grpo"):
            _check(self.sampling.num_generations >= 2, f"sampling.num_generations must be >= 2 for algorithm "
                   f"{self.algorithm.name!r} (a group to compare within), got {self.sampling.num_generations}")
        if isinstance(self.eval_objectives, (list, tuple)):
            self.eval_objectives = {str(n): {} for n in self.eval_objectives}
        if self.reward.weight_schedule is not None:
            _check(not self.conditioning.enabled, "reward.weight_schedule: a weight-conditioned policy draws its own "
                   "weights per prompt group; a schedule is for one policy's training")
            _check(not self.supervised.enabled, "reward.weight_schedule: supervised fine-tuning has no steps of reward "
                   "to schedule (it selects samples under reward.weights)")
            self.reward.schedule(self.optim.steps)  # every vector one weight per objective
        if self.supervised.enabled and self.supervised.select == "rewards_in_context":
            # after training the targets reach the policy only through the chat template (as a conditioned one's weights)
            _check(self.model.use_chat_template, "supervised.select rewards_in_context needs model.use_chat_template: true "
                   "(a Rewards-in-Context policy is told its targets through the chat template)")
        if self.conditioning.enabled:
            self.conditioning.check_objectives(len(self.reward.objectives))
            # evaluation, load_policy and exports state the weights through the tokenizer's chat template
            _check(self.model.use_chat_template, "conditioning.enabled needs model.use_chat_template: true "
                   "(a conditioned policy is told its weights through the chat template)")
