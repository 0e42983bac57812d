"""A scorer of review candidates learned from the proofreader's answers (plain numpy).

Every accept (the segmentation was wrong there: label 1) or reject (it was
right: label 0) is a labelled example of its candidate's features.
:class:`ReviewScorer` fits one L2-regularised logistic regression per
candidate kind by Newton's method.  The last feature of every kind is the logit
of the candidate's prior, and the regularisation pulls the weights towards
"the prior unchanged" (weight 1 on that logit, 0 elsewhere), so a few answers
adjust the prior and many answers can override it.  A kind with fewer than
``min_examples`` accepted or rejected answers keeps its prior.

Scoring 10,000 candidates is one matrix product per kind (milliseconds).

Pure numpy: no Qt, no napari, no torch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ReviewScorer"]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


class _Logistic:
    """L2 logistic regression pulled towards the prior (last feature = prior logit)."""

    def __init__(self, n_features: int, l2: float):
        self.l2 = float(l2)
        self.mean = np.zeros(n_features)
        self.std = np.ones(n_features)
        self.w0 = np.zeros(n_features + 1)
        self.w0[-2] = 1.0  # weight of the prior logit; the last weight is the bias
        self.w = self.w0.copy()

    def _design(self, x):
        z = (x - self.mean) / self.std
        z[:, -1] = x[:, -1]  # the prior logit stays as is
        return np.concatenate([z, np.ones((len(x), 1))], axis=1)

    def fit(self, x, y, weight):
        self.mean = x.mean(0)
        self.std = np.where(x.std(0) > 1e-9, x.std(0), 1.0)
        a = self._design(x)
        w = self.w0.copy()
        reg = np.full(len(w), self.l2)
        reg[-1] = self.l2 * 0.1  # a loose bias
        for _ in range(25):
            p = _sigmoid(a @ w)
            grad = a.T @ (weight * (p - y)) + reg * (w - self.w0)
            hess = (a * (weight * p * (1 - p))[:, None]).T @ a + np.diag(reg)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-6:
                break
        self.w = w

    def predict(self, x):
        return _sigmoid(self._design(x) @ self.w)


class ReviewScorer:
    """Probability that a candidate is a real error, learned from answers.

    Parameters
    ----------
    min_examples : int, optional
        Accepted and rejected answers of a kind needed (each) before its prior
        is replaced by the fitted model.
    l2 : float, optional
        Strength of the pull towards the prior.

    Examples
    --------
    >>> scorer = ReviewScorer()
    >>> scorer.fit(candidates, labels)  # doctest: +SKIP
    >>> p = scorer.predict(queue_candidates)  # doctest: +SKIP
    """

    def __init__(self, min_examples: int = 5, l2: float = 2.0):
        self.min_examples = int(min_examples)
        self.l2 = float(l2)
        self.models: dict[str, _Logistic] = {}

    @property
    def fitted_kinds(self) -> list[str]:
        """List of str: Kinds with a fitted model (the others use their prior)."""
        return sorted(self.models)

    def fit(self, candidates, labels) -> ReviewScorer:
        """Fit the models from answered candidates.

        Parameters
        ----------
        candidates : sequence of Candidate
            Answered candidates (anything with ``kind`` and ``features``).
        labels : sequence of bool or int
            1 (True) where the suggested fix was accepted, 0 where rejected.

        Returns
        -------
        ReviewScorer
            Itself.
        """
        labels = np.asarray(labels, dtype=np.float64).reshape(-1)
        if len(labels) != len(candidates):
            raise ValueError(f"{len(candidates)} candidates but {len(labels)} labels")
        self.models = {}
        kinds = sorted({c.kind for c in candidates})
        for kind in kinds:
            idx = [i for i, c in enumerate(candidates) if c.kind == kind]
            y = labels[idx]
            n_pos = int(y.sum())
            if min(n_pos, len(y) - n_pos) < self.min_examples:
                continue
            x = np.stack([np.asarray(candidates[i].features, np.float64) for i in idx])
            # unweighted: the probability must stay calibrated, as it multiplies importance
            model = _Logistic(x.shape[1], self.l2)
            model.fit(x, y, np.ones(len(y)))
            self.models[kind] = model
        return self

    def predict(self, candidates) -> np.ndarray:
        """Return the probability that each candidate is a real error.

        Parameters
        ----------
        candidates : sequence of Candidate
            Candidates (``kind``, ``features``, ``prior``).

        Returns
        -------
        numpy.ndarray
            ``(len(candidates),)`` float64 in (0, 1); the prior for kinds
            without a fitted model.
        """
        out = np.array([float(c.prior) for c in candidates], dtype=np.float64)
        for kind, model in self.models.items():
            idx = [i for i, c in enumerate(candidates) if c.kind == kind]
            if idx:
                x = np.stack([np.asarray(candidates[i].features, np.float64) for i in idx])
                out[idx] = model.predict(x)
        return out
