"""Fit the review candidates' prior from simulated answers on training data only.

The prior probability that a candidate is a real error
(:mod:`napari_connectome.core.review_candidates`) is a logistic model of the
candidate's features.  This script fits it on volumes the project may train on
(never the held-out ISBI z 20-29, VNC z 15-19, gala z 40-49): ISBI z 0-9 and
10-19, gala z 0-9 ... 30-39, VNC z 0-4 and 5-9 (2D sections side by side) and
two phantoms, each segmented with the bundled model.  A simulated proofreader
answers each queue in static order (with the prior in force when it runs, and
the default :class:`CandidateConfig`); every answer (accept: the fix lowers the
VOI) is an example.  Prints the coefficients to paste into
``_MERGE_PRIOR`` / ``_SPLIT_PRIOR`` of
``napari_connectome/core/review_prior.py``.

Usage::

    python scripts/fit_review_prior.py [--data-dir ../shared/data] [--cache DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import review as bench  # noqa: E402


def training_volumes(data_dir: Path, cache: Path | None):
    """Return ``(name, result, truth)`` of the training crops (never the held-out parts)."""
    out = []
    path = data_dir / bench.ISBI[0]
    if path.exists():
        with np.load(path) as d:
            for z0 in (0, 10):
                raw, truth = d["raw"][z0 : z0 + 10], d["labels_cc"][z0 : z0 + 10]
                bnd = bench._boundaries(f"isbi_z{z0}", raw, bench.ISBI[1], cache)
                out.append((f"ISBI z{z0}", bench._result(bnd, bench.ISBI[1]), truth))
    path = data_dir / bench.GALA[0]
    if path.exists():
        with np.load(path) as d:
            for z0 in (0, 10, 20, 30):
                raw, truth = d["raw"][z0 : z0 + 10], d["labels"][z0 : z0 + 10]
                bnd = bench._boundaries(f"gala_z{z0}", raw, bench.GALA[1], cache)
                out.append((f"gala z{z0}", bench._result(bnd, bench.GALA[1]), truth))
    path = data_dir / bench.VNC[0]
    if path.exists():
        with np.load(path) as d:
            for z0 in (0, 5):
                raw, mem = d["raw"][z0 : z0 + 5], d["membranes"][z0 : z0 + 5]
                bnd = bench._boundaries(f"vnc_z{z0}", raw, bench.VNC[1], cache)
                truth = bench.side_by_side(bench.truth_2d_from_membranes(mem))
                mask = bench.side_by_side(np.ones(raw.shape, bool), fill=False)
                res = bench._result(bench.side_by_side(bnd), bench.VNC[1][1:], mask=mask)
                out.append((f"VNC z{z0}", res, truth))
    from napari_connectome.synthetic import make_phantom

    shape, voxel, _ = bench.PHANTOM
    for seed in (1, 2):
        ph = make_phantom(shape, voxel, seed=seed)
        bnd = bench._boundaries(f"phantom_{seed}", ph.raw, voxel, cache)
        out.append((f"phantom {seed}", bench._result(bnd, voxel), ph.neurons))
    return out


def fit(x, y, l2=1.0):
    """Plain L2 logistic regression (standardised features); returns weights in raw units."""
    mean, std = x.mean(0), np.where(x.std(0) > 1e-9, x.std(0), 1.0)
    a = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)
    w = np.zeros(a.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) + l2 * np.r_[w[:-1], 0]
        hess = (a * (p * (1 - p))[:, None]).T @ a + l2 * np.diag(np.r_[np.ones(len(w) - 1), 0])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    coef = w[:-1] / std
    bias = w[-1] - float(np.dot(coef, mean))
    return coef, bias


def main(argv=None) -> int:
    """Answer the training queues, fit the prior models, print their coefficients."""
    from napari_connectome.core.proofreading import ProofreadingState
    from napari_connectome.core.review_candidates import MERGE_FEATURES, SPLIT_FEATURES
    from napari_connectome.core.review_queue import ReviewQueue
    from napari_connectome.core.review_simulation import simulate_review

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(bench.DEFAULT_DATA))
    parser.add_argument("--cache", help="folder to cache predicted boundary maps in")
    args = parser.parse_args(argv)
    cache = Path(args.cache) if args.cache else None
    examples = {"merge": ([], []), "split": ([], [])}
    for name, result, truth in training_volumes(Path(args.data_dir), cache):
        state = ProofreadingState.from_result(result)
        state.fragments = result.fragments.copy()
        queue = ReviewQueue(state, ranking="static")
        out = simulate_review(state, truth, queue=queue)
        for c, accepted in queue.answers:
            examples[c.kind][0].append(c.features[:-1])  # without the prior's own logit
            examples[c.kind][1].append(float(accepted))
        print(
            f"{name}: {out['final']['decisions']} answers, {out['final']['accepted']} accepted",
            file=sys.stderr,
        )
    for kind, names in (("merge", MERGE_FEATURES), ("split", SPLIT_FEATURES)):
        x, y = np.array(examples[kind][0]), np.array(examples[kind][1])
        coef, bias = fit(x, y)
        p = 1 / (1 + np.exp(-(x @ coef + bias)))
        auc = float((p[y > 0][:, None] > p[y == 0][None, :]).mean()) if 0 < y.sum() < len(y) else 0
        print(f"# {kind}: {len(y)} examples, {int(y.sum())} accepted, training AUC {auc:.3f}")
        pairs = ", ".join(f"{n!r}: {c:.4g}" for n, c in zip(names[:-1], coef, strict=True))
        print(f"_{kind.upper()}_PRIOR = ({{{pairs}}}, {bias:.4g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
