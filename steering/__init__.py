"""Steering models with concept vectors and scoring what they say.

Public API: `Steerer`, `steered_generate` (steering.steerer); `steering_set`, `SteeringVector`
(steering.vectors); `run_sentiment`, `run_backtracking`, `run_confidence`, `run_refusal`
(steering.evals); scorers in steering.scoring; the optional judge in steering.judge.
The names load on first use, so `steering.catalog` imports without torch.
"""

_PUBLIC = {"Steerer": "steering.steerer", "steered_generate": "steering.steerer", "SteeringVector": "steering.vectors",
           "steering_set": "steering.vectors"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'steering' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_PUBLIC[name]), name)
