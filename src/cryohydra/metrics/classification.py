"""How well a per-particle score separates two kinds of particles (good ones from junk)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

__all__ = ["roc_auc"]


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for telling the ``positive`` particles (bool)
    from the others: the probability that a positive scores above a negative (ties count
    half; the Mann-Whitney U over the product of the counts). 1: perfect, 0.5: chance."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the ROC AUC needs particles of both kinds")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
