"""Benchmark the review queue with a simulated proofreader: learned vs static vs random order.

For every real volume in ``--data-dir`` (held-out parts only: ISBI 2012 z 20-29,
VNC stack 1 z 15-19, gala z 40-49) and for an EM phantom, the volume is
segmented with the bundled boundary model
(:func:`napari_connectome.segmentation.segment_volume`, default threshold), the
review queue is built on it, and the simulated proofreader of
:func:`napari_connectome.core.review_simulation.simulate_review` answers the
whole queue (accept a fix when it lowers the VOI against the truth) in three
orders: the learned ranking, the static ranking (prior x importance) and
random order (``--seeds`` seeds).  Reported per volume and order:

- start, end and fragment-level floor VOI (every fragment takes its majority
  true label) and the coverage: share of the gap start -> floor the whole queue
  removes (target >= 70%);
- the share of the queue's VOI drop removed by the first 20% of decisions
  (target >= 60%);
- the area between the VOI-against-decisions curve and its final VOI, as a
  ratio to random order's mean (target <= 0.5);
- the effort ratio: decisions needed to reach 95% of the drop (of the smaller
  of the two drops, so both reach the same accuracy) over random order's
  (the seed's claim: <= 0.2);
- the time to re-rank 10,000 candidates with the learned scorer (target < 5 s).

VNC stack 1 has no neuron ids: its truth is the connected components of
``membranes == 0`` per section, so each section is segmented in 2D and the five
sections are laid side by side (one masked column between them) as one 2D
volume.

Prints Markdown tables and writes a PNG plot of VOI against decisions
(``--plot``, matplotlib needed; otherwise the table says so); ``--json`` prints
one JSON object with the same figures.

Usage::

    python benchmarks/review.py [--data-dir ../shared/data] [--seeds 3]
                                [--cache DIR] [--plot review.png] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from _shared import truth_2d_from_membranes

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
ISBI = ("isbi2012_cardona_3d.npz", (50.0, 4.0, 4.0))
GALA = ("gala_fib_train.npz", (10.0, 10.0, 10.0))
VNC = ("drosophila_vnc_stack1.npz", (50.0, 4.6, 4.6))
PHANTOM = ((16, 256, 256), (40.0, 4.0, 4.0), 7)
TARGETS = {"coverage": 0.7, "first20": 0.6, "area_ratio": 0.5, "effort_ratio": 0.2}


def log(message: str) -> None:
    print(f"[review benchmark] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ volumes
def _boundaries(name: str, raw, voxel, cache: Path | None):
    """Boundary map of the bundled model (cached in ``cache`` when given)."""
    from napari_connectome.segmentation import segment_volume

    path = None if cache is None else cache / f"{name}.npy"
    if path is not None and path.exists():
        return np.load(path)
    log(f"{name}: predicting boundaries {raw.shape}")
    bnd = segment_volume(raw, voxel).boundaries.astype(np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, bnd)
    return bnd


def _result(bnd, voxel, mask=None, raw=None):
    """Segment as ``segment_volume`` does: with section correction when ``raw`` is given."""
    from napari_connectome.segmentation import check_sections, segment_boundaries_state

    sections = check_sections(raw, voxel)[0] if raw is not None else None
    return segment_boundaries_state(bnd.copy(), voxel, mask=mask, sections=sections)


def side_by_side(stack: np.ndarray, fill=0) -> np.ndarray:
    """Lay the sections of ``(z, y, x)`` side by side along x, one ``fill`` column between."""
    z, y, x = stack.shape
    out = np.full((y, z * (x + 1) - 1), fill, dtype=stack.dtype)
    for i in range(z):
        out[:, i * (x + 1) : i * (x + 1) + x] = stack[i]
    return out


def volumes(data_dir: Path, cache: Path | None) -> list[dict]:
    """Segmentation results and truths of the held-out volumes and the phantom."""
    out = []
    path = data_dir / ISBI[0]
    if path.exists():
        with np.load(path) as d:
            raw, truth = d["raw"][20:30], d["labels_cc"][20:30]
        bnd = _boundaries("isbi_z20-29", raw, ISBI[1], cache)
        out.append(
            {
                "volume": "ISBI 2012",
                "held_out": "z 20-29",
                "truth": truth,
                "result": _result(bnd, ISBI[1], raw=raw),
            }
        )
    path = data_dir / VNC[0]
    if path.exists():
        with np.load(path) as d:
            raw, membranes = d["raw"][15:20], d["membranes"][15:20]
        bnd = _boundaries("vnc_z15-19", raw, VNC[1], cache)
        truth = side_by_side(truth_2d_from_membranes(membranes))
        mask = side_by_side(np.ones(raw.shape, bool), fill=False)
        result = _result(side_by_side(bnd), VNC[1][1:], mask=mask)
        out.append(
            {
                "volume": "VNC stack 1 (2D sections)",
                "held_out": "z 15-19",
                "truth": truth,
                "result": result,
            }
        )
    path = data_dir / GALA[0]
    if path.exists():
        with np.load(path) as d:
            raw, truth = d["raw"][40:50], d["labels"][40:50]
        bnd = _boundaries("gala_z40-49", raw, GALA[1], cache)
        out.append(
            {
                "volume": "gala FIB-SEM",
                "held_out": "z 40-49",
                "truth": truth,
                "result": _result(bnd, GALA[1], raw=raw),
            }
        )
    from napari_connectome.synthetic import make_phantom

    shape, voxel, seed = PHANTOM
    phantom = make_phantom(shape, voxel, seed=seed)
    bnd = _boundaries(f"phantom_{seed}", phantom.raw, voxel, cache)
    out.append(
        {
            "volume": "phantom",
            "held_out": f"seed {seed}, {shape}",
            "truth": phantom.neurons,
            "result": _result(bnd, voxel, raw=phantom.raw),
        }
    )
    return out


# ------------------------------------------------------------------ measures
def curve_measures(v: np.ndarray, floor: float) -> dict:
    """Coverage, first-20% share and area of one VOI-per-decision curve."""
    d = len(v) - 1
    drop = float(v[0] - v[-1])
    gap = float(v[0] - floor)
    k20 = int(np.floor(0.2 * d))
    return {
        "decisions": d,
        "voi_start": float(v[0]),
        "voi_end": float(v[-1]),
        "drop": drop,
        "coverage": drop / gap if gap > 0 else float("nan"),
        "first20": float(v[0] - v[k20]) / drop if drop > 0 else float("nan"),
        "area": float(np.sum(v[:-1] - v[-1])),
    }


def effort(v: np.ndarray, level: float) -> int:
    """Decisions until the curve first reaches ``level`` or below."""
    hit = np.flatnonzero(v <= level + 1e-12)
    return int(hit[0]) if len(hit) else len(v) - 1


def timed_queue(state, ranking, seed):
    """Return a review queue whose ``next``, ``accept`` and ``reject`` record their time."""
    from napari_connectome.core.review_queue import ReviewQueue

    queue = ReviewQueue(state, ranking=ranking, seed=seed)
    timings = {"next": [], "accept": [], "reject": []}
    for name in timings:
        method = getattr(queue, name)

        def wrapper(*args, _method=method, _out=timings[name], **kwargs):
            start = time.perf_counter()
            result = _method(*args, **kwargs)
            _out.append(time.perf_counter() - start)
            return result

        setattr(queue, name, wrapper)
    return queue, timings


def latency(times) -> dict:
    t = np.asarray(times) * 1000.0
    if not len(t):
        return {"n": 0}
    return {
        "n": int(len(t)),
        "median": float(np.median(t)),
        "p95": float(np.percentile(t, 95)),
        "max": float(t.max()),
    }


def run_volume(entry: dict, seeds: int) -> dict:
    from napari_connectome.core.proofreading import ProofreadingState
    from napari_connectome.core.review_simulation import simulate_review

    result, truth = entry["result"], entry["truth"]
    fragments = result.fragments
    runs = []
    orders = [("learned", 0), ("static", 0)] + [("random", s) for s in range(seeds)]
    for ranking, seed in orders:
        state = ProofreadingState.from_result(result)
        state.fragments = fragments.copy()  # the queue never cuts voxels; keep the source
        start = time.perf_counter()
        queue, timings = timed_queue(state, ranking, seed)
        out = simulate_review(state, truth, queue=queue, every=1)
        seconds = time.perf_counter() - start
        v = np.array([p["voi"] for p in out["curve"]])
        m = curve_measures(v, out["floor"]["voi"])
        runs.append(
            {
                "ranking": ranking,
                "seed": seed,
                "seconds": seconds,
                "latency_ms": {k: latency(t) for k, t in timings.items()},
                "queue_length": out["queue_length"],
                "floor": out["floor"],
                "final": out["final"],
                "curve": v.tolist(),
                **m,
            }
        )
        log(
            f"{entry['volume']} {ranking} {seed}: {m['decisions']} decisions, "
            f"VOI {m['voi_start']:.3f} -> {m['voi_end']:.3f} (floor {out['floor']['voi']:.3f}), "
            f"first 20% {m['first20']:.2f}, {seconds:.1f} s"
        )
    rand = [r for r in runs if r["ranking"] == "random"]
    rand_area = float(np.mean([r["area"] for r in rand]))
    for r in runs:
        r["area_ratio"] = r["area"] / rand_area if rand_area > 0 else float("nan")
        ratios = []
        for q in rand:
            level_drop = 0.95 * min(r["drop"], q["drop"])
            mine = effort(np.array(r["curve"]), r["voi_start"] - level_drop)
            theirs = effort(np.array(q["curve"]), q["voi_start"] - level_drop)
            ratios.append(mine / theirs if theirs > 0 else float("nan"))
        r["effort_ratio"] = float(np.mean(ratios))
    return {
        "volume": entry["volume"],
        "held_out": entry["held_out"],
        "n_fragments": int(result.n_fragments),
        "runs": runs,
    }


def rerank_time(n: int = 10_000) -> dict:
    """Seconds to fit the scorer on 200 answers and score ``n`` candidates."""
    from napari_connectome.core.review_candidates import MERGE_FEATURES, Candidate
    from napari_connectome.core.review_scorer import ReviewScorer

    rng = np.random.default_rng(0)
    nf = len(MERGE_FEATURES)

    def cand(i):
        x = rng.normal(size=nf)
        return Candidate(
            f"c{i}",
            "merge" if i % 2 else "split",
            (i,),
            (0, 0, 0),
            (),
            (),
            x,
            prior=float(1 / (1 + np.exp(-x[-1]))),
            importance=1.0,
        )

    answered = [cand(i) for i in range(200)]
    labels = [c.features[0] + 0.3 * rng.normal() > 0 for c in answered]
    queue = [cand(i) for i in range(n)]
    start = time.perf_counter()
    scorer = ReviewScorer().fit(answered, labels)
    p = scorer.predict(queue)
    order = np.argsort(-p)
    seconds = time.perf_counter() - start
    return {"candidates": n, "seconds": seconds, "ranked": int(len(order)), "target_s": 5.0}


# ------------------------------------------------------------------ report
def summary(vol: dict) -> list[dict]:
    rows = []
    runs = vol["runs"]
    for ranking in ("learned", "static", "random"):
        sel = [r for r in runs if r["ranking"] == ranking]
        if not sel:
            continue
        row = {"ranking": ranking + (f" ({len(sel)} seeds)" if ranking == "random" else "")}
        for key in (
            "queue_length",
            "decisions",
            "voi_start",
            "voi_end",
            "coverage",
            "first20",
            "area_ratio",
            "effort_ratio",
        ):
            row[key] = float(np.mean([r[key] for r in sel]))
        row["floor"] = sel[0]["floor"]["voi"]
        row["accepted"] = float(np.mean([r["final"]["accepted"] for r in sel]))
        rows.append(row)
    return rows


def markdown(res: dict) -> str:
    lines = [
        "| volume | order | queue | decisions | accepted | VOI start | VOI end | floor "
        "| coverage | first 20% | area / random | effort / random |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for vol in res["volumes"]:
        for row in vol["summary"]:
            lines.append(
                f"| {vol['volume']} ({vol['held_out']}) | {row['ranking']} "
                f"| {row['queue_length']:.0f} | {row['decisions']:.0f} | {row['accepted']:.0f} "
                f"| {row['voi_start']:.3f} | {row['voi_end']:.3f} | {row['floor']:.3f} "
                f"| {100 * row['coverage']:.0f}% | {100 * row['first20']:.0f}% "
                f"| {row['area_ratio']:.2f} | {row['effort_ratio']:.2f} |"
            )
    lines += [
        "",
        "Queue latency of the learned order (ms; `accept` applies the fix as an edit "
        "and "
        "re-derives the changed segments' candidates):",
        "",
        "| volume | next p95 | accept median | accept p95 | accept max | reject p95 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for vol in res["volumes"]:
        lat = next(r for r in vol["runs"] if r["ranking"] == "learned")["latency_ms"]
        lines.append(
            f"| {vol['volume']} | {lat['next'].get('p95', 0):.2f} "
            f"| {lat['accept'].get('median', 0):.1f} | {lat['accept'].get('p95', 0):.1f} "
            f"| {lat['accept'].get('max', 0):.1f} | {lat['reject'].get('p95', 0):.2f} |"
        )
    t = res["rerank"]
    lines += [
        "",
        f"Re-ranking {t['candidates']} candidates (fit on 200 answers + score): "
        f"{t['seconds']:.3f} s (target < {t['target_s']:.0f} s).",
        f"Targets (learned order): coverage >= {TARGETS['coverage']:.0%}, first 20% >= "
        f"{TARGETS['first20']:.0%}, area / random <= {TARGETS['area_ratio']}, "
        f"effort / random <= {TARGETS['effort_ratio']}.",
        f"Plot: {res['plot']}",
        f"Total {res['seconds']:.0f} s.",
    ]
    return "\n".join(lines)


def plot(res: dict, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "not written: matplotlib is not installed (pip install matplotlib)"
    vols = res["volumes"]
    fig, axes = plt.subplots(1, len(vols), figsize=(4.5 * len(vols), 3.6), squeeze=False)
    colours = {"learned": "C0", "static": "C1", "random": "0.6"}
    for ax, vol in zip(axes[0], vols, strict=True):
        for r in vol["runs"]:
            ax.plot(
                r["curve"],
                color=colours[r["ranking"]],
                lw=1.2,
                label=r["ranking"] if r["seed"] == 0 else None,
            )
        ax.axhline(vol["runs"][0]["floor"]["voi"], color="k", ls=":", lw=1, label="floor")
        ax.set_title(vol["volume"], fontsize=9)
        ax.set_xlabel("decisions")
        ax.set_ylabel("VOI (bits)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return str(path)


def run(args) -> dict:
    start = time.perf_counter()
    data_dir = Path(args.data_dir)
    cache = Path(args.cache) if args.cache else None
    res = {"volumes": []}
    for entry in volumes(data_dir, cache):
        if args.only and not any(o.lower() in entry["volume"].lower() for o in args.only):
            continue
        vol = run_volume(entry, args.seeds)
        vol["summary"] = summary(vol)
        res["volumes"].append(vol)
    res["rerank"] = rerank_time()
    res["plot"] = plot(res, Path(args.plot)) if args.plot else "not asked (--plot PATH)"
    for vol in res["volumes"]:
        for r in vol["runs"]:
            step = 1 if args.curves else max(1, len(r["curve"]) // 200)
            r["curve_step"] = step
            r["curve"] = r["curve"][::step]
    res["targets"] = TARGETS
    res["seconds"] = time.perf_counter() - start
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder of the .npz files")
    parser.add_argument("--seeds", type=int, default=3, help="random-order seeds")
    parser.add_argument("--cache", help="folder to cache predicted boundary maps in")
    parser.add_argument("--plot", default="review_benchmark.png", help="PNG of VOI curves")
    parser.add_argument("--only", nargs="*", help="volumes whose name contains one of these")
    parser.add_argument("--curves", action="store_true", help="full curves in --json output")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    res = run(args)
    print(json.dumps(res) if args.json else markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
