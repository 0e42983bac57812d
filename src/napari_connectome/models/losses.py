"""Training loss and pixel-wise validation scores of boundary maps."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["boundary_loss", "boundary_scores"]


def boundary_loss(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, dice_weight: float = 0.0
) -> torch.Tensor:
    """Class-balanced binary cross-entropy (plus an optional soft Dice term).

    Parameters
    ----------
    logits, target, mask : torch.Tensor
        Same shape; ``target`` in ``[0, 1]`` (1 = boundary), ``mask`` 1 where the
        loss counts.
    dice_weight : float
        Weight of ``1 - Dice`` of the boundary class.

    Returns
    -------
    torch.Tensor
        Scalar loss. Boundary and interior pixels weigh half each in the BCE.
    """
    total = mask.sum().clamp_min(1.0)
    frac = ((target * mask).sum() / total).clamp(0.02, 0.98).detach()
    weight = mask * (target * (0.5 / frac) + (1 - target) * (0.5 / (1 - frac)))
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")
    loss = loss / total
    if dice_weight > 0:
        prob = torch.sigmoid(logits) * mask
        overlap = (prob * target).sum()
        dice = (2 * overlap + 1.0) / (prob.sum() + (target * mask).sum() + 1.0)
        loss = loss + dice_weight * (1 - dice)
    return loss


def boundary_scores(prob: np.ndarray, truth: np.ndarray, bins: int = 1000) -> dict[str, float]:
    """Pixel-wise scores of a boundary probability map against a boundary mask.

    Parameters
    ----------
    prob : numpy.ndarray
        Probabilities in ``[0, 1]``.
    truth : numpy.ndarray
        Boolean boundary mask of the same shape.
    bins : int
        Resolution of the thresholds (scores are computed from histograms).

    Returns
    -------
    dict
        ``f1`` (threshold 0.5), ``best_f1`` and ``best_threshold``, ``roc_auc``,
        ``average_precision``, ``boundary_fraction``.
    """
    p = np.asarray(prob, np.float32).ravel()
    t = np.asarray(truth, bool).ravel()
    idx = np.minimum((np.clip(p, 0, 1) * bins).astype(np.int64), bins - 1)
    pos = np.bincount(idx[t], minlength=bins)[::-1].cumsum()[::-1].astype(float)
    neg = np.bincount(idx[~t], minlength=bins)[::-1].cumsum()[::-1].astype(float)
    npos, nneg = pos[0], neg[0]
    if npos == 0 or nneg == 0:
        return {"boundary_fraction": float(t.mean())}
    precision = pos / np.maximum(pos + neg, 1)
    recall = pos / npos
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    tpr = np.append(recall, 0.0)
    fpr = np.append(neg / nneg, 0.0)
    auc = float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2))
    ap = float(np.sum((recall - np.append(recall[1:], 0.0)) * precision))
    best = int(np.argmax(f1))
    return {
        "f1": float(f1[bins // 2]),
        "best_f1": float(f1[best]),
        "best_threshold": best / bins,
        "roc_auc": auc,
        "average_precision": ap,
        "boundary_fraction": float(npos / (npos + nneg)),
    }
