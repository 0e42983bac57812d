"""Record of why the agglomeration defaults are what they are.

Scores segmentations from stand-in boundary maps (and, optionally, the bundled
model's predictions) before and after the current defaults, at merge
thresholds 0.3 / 0.4 / 0.5 / 0.6, and prints a Markdown table of adapted Rand
error and VOI split / merge per volume and stand-in.

Volumes (paths relative to the repository root, never copied into it):

- ``phantom1``, ``phantom2``: ``make_phantom((24, 256, 256), (40, 4, 4), seed)``,
  truth ``np.where(membranes, 0, neurons)`` (tuning set);
- ``isbi0-19``: ISBI 2012 sections 0-19, truth ``labels_cc`` (tuning set);
- ``isbi20-29``: ISBI 2012 sections 20-29 (held out);
- ``gala``: gala FIB-SEM, 10 nm isotropic, truth ``labels`` (held out; its
  fragments are 3D, so the between-section term does not apply there).

Stand-in boundary maps, made from the truth membranes (``membranes`` for ISBI
and phantoms, ``labels == 0`` for gala), blurred in-plane (in 3D for gala),
rescaled so that membrane centres are about 1 as a trained model's are (thin
membranes would otherwise peak at 0.2-0.6), plus Gaussian noise and clipped:

- ``blur1``: sigma 1 px, noise 0.1;
- ``blur2``: sigma 2 px, noise 0.2;
- ``gaps``: sigma 1 px, noise 0.1, and random holes (about 16 nm radius, each
  keeping 0-50 % of the membrane) covering about a third of the membrane, like
  a real model's weak spots;
- ``mito``: sigma 1 px, noise 0.1, plus the outlines of the truth
  mitochondria (each 0.3-0.9 strong) as false boundaries inside cells, like a
  real model's other typical error (ISBI and phantoms only).

``before`` is the pipeline as it was (fragments flooded on the boundary map
alone, merge score = boundary mean); ``after`` the defaults (flooding also
follows the distance to the boundaries, ``distance_weight=0.1`` of
:func:`~napari_connectome.core.fragments.make_fragments`, and the
between-section overlap term).  ``--sweep`` also prints the mean scores over
the tuning set for a grid of ``distance_weight``, ``z_overlap`` and
``section_threshold`` (the defaults are from the best region of that grid,
chosen on the tuning set only).  ``--model`` adds the bundled
model's predictions on ISBI 20-29 (about a minute on a CPU); ``--boundaries
FILE.npy`` uses a saved prediction of ISBI 20-29 instead.

Usage::

    python scripts/tune_agglomeration.py [--data-dir ../shared/data] [--sweep]
        [--model | --boundaries FILE.npy] [--volumes isbi20-29 gala ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from napari_connectome.core.agglomeration import (
    SECTION_THRESHOLD,
    Z_OVERLAP,
    agglomerate,
    apply_table,
    segment_table,
)
from napari_connectome.core.fragments import make_fragments
from napari_connectome.core.metrics import evaluate_segmentation
from napari_connectome.core.region_graph import build_region_graph

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
TUNING = ("phantom1", "phantom2", "isbi0-19")
HELD_OUT = ("isbi20-29", "gala")
#: name: (blur sigma in pixels, noise sigma, fraction of membrane in holes)
STAND_INS = {
    "blur1": (1.0, 0.1, 0.0),
    "blur2": (2.0, 0.2, 0.0),
    "gaps": (1.0, 0.1, 0.33),
    "mito": (1.0, 0.1, 0.0),  # + mitochondrion outlines as false boundaries
}
GAP_RADIUS_NM = 16.0


def load_volume(name: str, data_dir: Path):
    """Return (membranes bool, truth, voxel size, raw, mitochondria or None) of a volume."""
    if name.startswith("phantom"):
        from napari_connectome.synthetic import make_phantom

        p = make_phantom((24, 256, 256), (40, 4, 4), seed=int(name[len("phantom") :]))
        truth = np.where(p.membranes, 0, p.neurons)
        return p.membranes, truth, (40.0, 4.0, 4.0), p.raw, p.mitochondria
    if name.startswith("isbi"):
        lo, hi = (int(x) for x in name[len("isbi") :].split("-"))
        with np.load(data_dir / "isbi2012_cardona_3d.npz") as d:
            sl = slice(lo, hi + 1)
            membranes, truth = d["membranes"][sl] > 0, d["labels_cc"][sl]
            return membranes, truth, (50.0, 4.0, 4.0), d["raw"][sl], d["mitochondria"][sl]
    if name == "gala":
        with np.load(data_dir / "gala_fib_train.npz") as d:
            labels = d["labels"]
            return labels == 0, labels, (10.0, 10.0, 10.0), d["raw"], None
    raise ValueError(f"unknown volume {name!r}")


def stand_in(membranes, voxel_size, sigma, noise, gaps, mito=None, seed=0):
    """Make a stand-in boundary prediction from truth membranes (see module docstring)."""
    rng = np.random.default_rng(seed)
    iso = voxel_size[0] < 2 * voxel_size[1]
    m = membranes.astype(np.float32)
    if gaps > 0:
        r = max(1, int(round(GAP_RADIUS_NM / voxel_size[-1])))
        grid = np.mgrid[(slice(-r, r + 1),) * (3 if iso else 2)]
        ball = (grid**2).sum(0) <= r * r
        ball = ball if iso else ball[None]
        # each hole removes about (area of a disk) membrane voxels, membranes
        # are about 2r wide: centres to cover ``gaps`` of the membrane
        idx = np.flatnonzero(membranes)
        k = int(gaps * idx.size / max(ball.sum() / 2, 1))
        centres = np.zeros(m.shape, bool)
        centres.ravel()[rng.choice(idx, min(k, idx.size), replace=False)] = True
        holes, n_holes = ndi.label(ndi.binary_dilation(centres, ball))
        keep = rng.uniform(0.0, 0.5, n_holes + 1).astype(np.float32)
        keep[0] = 1.0
        m *= keep[holes]
    s = (sigma,) * 3 if iso else (0.0, sigma, sigma)
    ref = ndi.gaussian_filter(membranes.astype(np.float32), s)
    bnd = ndi.gaussian_filter(m, s) / max(float(np.median(ref[membranes])), 1e-3)
    bnd += rng.normal(0.0, noise, bnd.shape).astype(np.float32)
    if mito is not None:  # false boundaries: mitochondrion outlines, 0.3-0.9 strong
        lab, n_mito = ndi.label(mito > 0)
        ring = np.zeros(m.shape, bool)
        for z in range(m.shape[0]):
            ring[z] = find_boundaries(lab[z], mode="inner")
        strength = rng.uniform(0.3, 0.9, n_mito + 1).astype(np.float32)
        strength[0] = 0.0
        fake = ndi.gaussian_filter(np.where(ring, strength[lab], 0.0).astype(np.float32), s) * 2
        bnd = np.maximum(bnd, fake)
    return np.clip(bnd, 0.0, 1.0).astype(np.float32)


def scores_at(tree, fragments, truth, n):
    """(ARAND, VOI split, VOI merge) at each of THRESHOLDS."""
    rows = []
    for t in THRESHOLDS:
        e = evaluate_segmentation(apply_table(segment_table(tree, n, t), fragments), truth)
        rows.append((e["arand"], e["voi_split"], e["voi_merge"]))
    return rows


def evaluate(bnd, truth, voxel_size, variants, made=None):
    """{variant: rows} and {variant: seconds for fragments + graph + agglomeration}.

    ``variants`` maps a name to ``(make_fragments kwargs, agglomerate kwargs)``;
    fragments and graph are made once per distinct fragment kwargs (kept in
    ``made`` when given).
    """
    made = {} if made is None else made
    out, timing = {}, {}
    for name, (frag_kwargs, agg_kwargs) in variants.items():
        key = tuple(sorted(frag_kwargs.items()))
        if key not in made:
            start = time.perf_counter()
            frags = make_fragments(bnd, voxel_size, **frag_kwargs)
            n = int(frags.max())
            graph = build_region_graph(frags, bnd, voxel_size, n_fragments=n)
            made[key] = (frags, graph, time.perf_counter() - start)
        frags, graph, seconds = made[key]
        start = time.perf_counter()
        tree = agglomerate(graph, **agg_kwargs)
        timing[name] = seconds + time.perf_counter() - start
        out[name] = scores_at(tree, frags, truth, graph.n_fragments)
    return out, timing


def mean_row(rows):
    """Mean ARAND and mean VOI (split + merge) per threshold over datasets."""
    arr = np.asarray(rows)  # (datasets, thresholds, 3)
    arand = " ".join(f"{x:.3f}" for x in arr[:, :, 0].mean(0))
    voi = " ".join(f"{x:.2f}" for x in (arr[:, :, 1] + arr[:, :, 2]).mean(0))
    return f"ARAND {arand}  VOI {voi}  worst ARAND at 0.5 {arr[:, 2, 0].max():.3f}"


def fmt(rows):
    """Format one table row's cells."""
    return " | ".join(f"{a:.3f} {s:.2f}/{m:.2f}" for a, s, m in rows)


def main(argv=None) -> int:
    """Print the table (and the sweep); return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--volumes", nargs="+", default=[*TUNING, *HELD_OUT])
    parser.add_argument("--stand-ins", nargs="+", default=list(STAND_INS))
    parser.add_argument("--sweep", action="store_true", help="grid over the tuning set")
    parser.add_argument("--model", action="store_true", help="add the bundled model on ISBI 20-29")
    parser.add_argument("--boundaries", type=Path, help="saved model prediction of ISBI 20-29")
    args = parser.parse_args(argv)

    variants = {
        "before": ({"distance_weight": 0.0}, {"z_overlap": None}),
        "after": ({}, {}),
    }
    print(
        f"before: make_fragments(distance_weight=0), agglomerate(z_overlap=None); after: "
        f"defaults (distance_weight=0.1, z_overlap={Z_OVERLAP}, "
        f"section_threshold={SECTION_THRESHOLD}).  Cells: ARAND VOIsplit/VOImerge at "
        "thresholds " + " / ".join(map(str, THRESHOLDS))
    )
    print()
    print("| volume | stand-in | variant | Mvox/s | " + " | ".join(map(str, THRESHOLDS)) + " |")
    print("|---|---|---|---:|" + "---|" * len(THRESHOLDS))
    tuning = []
    summary = {"before": [], "after": []}
    for vol in args.volumes:
        membranes, truth, vs, _, mito = load_volume(vol, args.data_dir)
        for sname in args.stand_ins:
            if sname == "mito" and mito is None:
                continue
            bnd = stand_in(
                membranes, vs, *STAND_INS[sname], mito=mito if sname == "mito" else None
            )
            if vol in TUNING:
                tuning.append((bnd, truth, vs, {}))
            res, timing = evaluate(bnd, truth, vs, variants)
            for var, rows in res.items():
                summary[var].append(rows)
                speed = bnd.size / timing[var] / 1e6
                print(f"| {vol} | {sname} | {var} | {speed:.1f} | {fmt(rows)} |", flush=True)
    print()
    for var, rows in summary.items():
        if rows:
            print(f"mean over the rows above, {var}: {mean_row(rows)}")

    model_bnd = None
    if args.boundaries is not None:
        model_bnd = np.load(args.boundaries)
    elif args.model:
        from napari_connectome.models import predict_boundaries

        _, _, vs, raw, _ = load_volume("isbi20-29", args.data_dir)
        model_bnd = predict_boundaries(raw, vs)
    if model_bnd is not None:
        _, truth, vs, _, _ = load_volume("isbi20-29", args.data_dir)
        res, timing = evaluate(np.asarray(model_bnd, np.float32), truth, vs, variants)
        print()
        for var, rows in res.items():
            speed = truth.size / timing[var] / 1e6
            print(f"| isbi20-29 | model | {var} | {speed:.1f} | {fmt(rows)} |", flush=True)

    if args.sweep and tuning:
        print()
        print("Sweep over the tuning volumes x stand-ins (means per threshold):")
        grid = [({"distance_weight": w}, {}) for w in (0.0, 0.02, 0.05, 0.1, 0.2)]
        grid += [({}, {"z_overlap": None})]
        grid += [
            ({}, {"z_overlap": z, "section_threshold": t})
            for z in (0.3, 0.4, 0.5, 0.6, 0.8)
            for t in (0.3, 0.4, 0.5)
        ]
        for frag_kwargs, agg_kwargs in grid:
            rows = [
                evaluate(bnd, truth, vs, {"v": (frag_kwargs, agg_kwargs)}, made)[0]["v"]
                for bnd, truth, vs, made in tuning
            ]
            print(f"{frag_kwargs} {agg_kwargs}: {mean_row(rows)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
