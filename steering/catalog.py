"""What the steering package offers, importable without torch (the CLI's parser reads it): the steering evals' names
and the default alpha grid of a direct `steer-eval`."""

EVAL_NAMES = ("sentiment", "backtracking", "confidence", "refusal")  # steering.evals.EVALS holds their runners
DEFAULT_ALPHAS = (-4.0, -2.0, 0.0, 2.0, 4.0)  # in units of the steering vector's norm (steering/vectors.py)
