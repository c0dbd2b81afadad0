"""Policy-gradient RL for causal LMs under a scalarized multi-objective reward."""
