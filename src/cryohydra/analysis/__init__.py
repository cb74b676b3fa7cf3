"""Analyses of semi-amortized pose inference on a run's saved model and history."""

from cryohydra.analysis.analyze import analyze

__all__ = ["analyze"]
