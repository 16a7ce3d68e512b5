"""Steering models with concept vectors and scoring what they say.

Public API: `Steerer`, `steered_generate` (steering.steerer); `steering_set`, `SteeringVector`
(steering.vectors); `run_sentiment`, `run_backtracking`, `run_confidence`, `run_refusal`
(steering.evals); scorers in steering.scoring; the optional judge in steering.judge.
"""

from steering.steerer import Steerer, steered_generate
from steering.vectors import SteeringVector, steering_set

__all__ = ["Steerer", "SteeringVector", "steered_generate", "steering_set"]
