"""welfare-axis: reproduce and extend the functional welfare axis study (arXiv:2605.30232)."""

__version__ = "0.1.0"
