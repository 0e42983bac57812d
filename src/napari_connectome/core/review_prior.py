"""The prior of review candidates: a logistic model of their features, fitted offline.

``scripts/fit_review_prior.py`` segments training volumes only (never the
held-out parts), lets a simulated proofreader answer their review queues and
fits one logistic regression per candidate kind; its coefficients are pasted
here.  The learned scorer (:mod:`~napari_connectome.core.review_scorer`) starts
from this prior and adapts it to each volume's answers.

Pure numpy: no Qt, no napari, no torch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MERGE_FEATURES", "SPLIT_FEATURES", "prior_probability"]

#: Names of the feature vector of a merge (false split) candidate.
MERGE_FEATURES = (
    "mean_score",
    "min_score",
    "max_score",
    "share_below_threshold",
    "log_contact",
    "log_small",
    "log_large",
    "contact_per_surface",
    "log_edges",
    "tiny",
    "small_inside",
    "prior_logit",
)
#: Names of the feature vector of a split (false merge) candidate.
SPLIT_FEATURES = (
    "link_score",
    "cut_min_score",
    "cut_mean_score",
    "log_cut",
    "log_small",
    "log_large",
    "cut_per_surface",
    "log_fragments",
    "rank",
    "disconnected",
    "spectral",
    "share_below_threshold",
    "prior_logit",
)


#: Prior models ``({feature: coefficient}, bias)`` of the logit of "the fix is right",
#: fitted by ``scripts/fit_review_prior.py`` on training volumes only (ISBI z 0-19,
#: gala z 0-39, VNC z 0-9, two phantoms; never the held-out parts).
#: Training AUC 0.92 (merge, 13047 answers) and 0.91 (split, 6426 answers).
_MERGE_PRIOR: tuple | None = (
    {
        "mean_score": -11.58,
        "min_score": -1.61,
        "max_score": 1.452,
        "share_below_threshold": -3.169,
        "log_contact": 0.01944,
        "log_small": -0.5956,
        "log_large": 0.09142,
        "contact_per_surface": 0.06013,
        "log_edges": -0.06551,
        "tiny": 0.135,
        "small_inside": 0.6272,
    },
    10.17,
)
_SPLIT_PRIOR: tuple | None = (
    {
        "link_score": -8.882,
        "cut_min_score": -1.338,
        "cut_mean_score": 17.97,
        "log_cut": 1.042,
        "log_small": -0.7338,
        "log_large": 0.03391,
        "cut_per_surface": -0.2939,
        "log_fragments": 0.6298,
        "rank": -2.022,
        "disconnected": 7.889,
        "spectral": -2.066,
        "share_below_threshold": 5.167,
    },
    -11.73,
)


def prior_probability(kind: str, feats: np.ndarray, fallback: float) -> float:
    """Return the prior probability that a candidate's fix is right.

    Parameters
    ----------
    kind : {"merge", "split"}
        The candidate's kind.
    feats : numpy.ndarray
        Its features, in ``MERGE_FEATURES`` or ``SPLIT_FEATURES`` order without
        the last (``prior_logit``).
    fallback : float
        The probability to use when no model is fitted for the kind.

    Returns
    -------
    float
        The fitted model's probability, in [0.001, 0.999].
    """
    model = {"merge": _MERGE_PRIOR, "split": _SPLIT_PRIOR}.get(kind)
    if model is None:
        return fallback
    names = MERGE_FEATURES if kind == "merge" else SPLIT_FEATURES
    coef, bias = model
    z = float(np.dot([coef.get(n, 0.0) for n in names[:-1]], feats)) + bias
    return float(np.clip(1.0 / (1.0 + np.exp(-z)), 0.001, 0.999))
