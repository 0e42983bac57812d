"""Benchmark missing and misaligned sections: accuracy with and without section correction.

On the held-out sections of the real serial-section volumes (ISBI 2012 z 20-29,
truth ``labels_cc``, scored in 3D; Drosophila VNC stack 1 z 15-19, truth = the
components of ``membranes == 0`` in each section, scored section by section
because the volume has no neuron ids), three versions of the stack are
segmented with the model (bundled by default) at ``DEFAULT_THRESHOLD``:

- ``clean``: the stack as it is;
- ``blank``: one section set to 0 (a missing section);
- ``shifted``: one section moved by 20 px in y and another by 40 px in x (the
  revealed border is black; the truth moves with the tissue, and the revealed
  border is unlabelled, so not scored);

each without section correction (``segment_boundaries_state`` on the
predicted boundaries) and with it (the same, after
``segmentation.check_sections``, exactly as ``segment_volume`` does). Boundary
predictions are per section, so the clean stack is predicted once and only the
altered sections are predicted again. For ``blank`` the scores without the
blank section are also given (its truth cannot be seen in the data).

Prints a Markdown table; ``--json`` prints one JSON object with the same figures.

Usage::

    python benchmarks/sections.py [--data-dir ../shared/data] [--model bundled|PATH]
                                  [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from _shared import truth_2d_from_membranes

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
METRICS = ("voi_split", "voi_merge", "voi", "arand")


def log(message: str) -> None:
    print(f"[sections benchmark] {message}", file=sys.stderr, flush=True)


def shift_plane(plane: np.ndarray, shift, fill) -> np.ndarray:
    """Move a section's content by an integer ``(dy, dx)``; the revealed border gets ``fill``."""
    return ndi.shift(plane, shift, order=0, mode="constant", cval=fill)


def per_section_ids(seg: np.ndarray) -> np.ndarray:
    """Make a 3D segmentation's ids unique per section (for per-section scoring)."""
    seg = seg.astype(np.uint64)
    step = np.uint64(int(seg.max()) + 1)
    return seg + np.arange(seg.shape[0], dtype=np.uint64)[:, None, None] * step


def scores(seg, truth, keep=None) -> dict:
    from napari_connectome.core.metrics import evaluate_segmentation

    if keep is not None:
        seg, truth = seg[keep], truth[keep]
    s = evaluate_segmentation(seg, truth)
    return {k: s[k] for k in METRICS}


def run_volume(name, raw, truth, voxel, model, blank, shifts, per_section) -> list[dict]:
    from napari_connectome.models import predict_boundaries
    from napari_connectome.segmentation import (
        DEFAULT_THRESHOLD,
        check_sections,
        segment_boundaries_state,
    )

    log(f"{name}: predicting {raw.shape}")
    start = time.perf_counter()
    clean_bnd = predict_boundaries(raw, voxel, model, device="cpu")
    predict_s = time.perf_counter() - start
    truth_fill = 0  # unlabelled

    versions = {"clean": (raw, clean_bnd, truth, [])}
    blank_raw, blank_bnd = raw.copy(), clean_bnd.copy()
    blank_raw[blank] = 0
    versions["blank"] = (blank_raw, blank_bnd, truth, [blank])
    shifted_raw, shifted_bnd, shifted_truth = raw.copy(), clean_bnd.copy(), truth.copy()
    for z, shift in shifts.items():
        shifted_raw[z] = shift_plane(raw[z], shift, 0)
        shifted_truth[z] = shift_plane(truth[z], shift, truth_fill)
    versions["shifted"] = (shifted_raw, shifted_bnd, shifted_truth, list(shifts))

    rows = []
    for condition, (vol, bnd, gt, altered) in versions.items():
        for z in altered:  # predictions are per section: only the altered ones change
            pair = np.stack([vol[z], raw[0]])  # a blank plane alone is refused as constant
            bnd[z] = predict_boundaries(pair, voxel, model, device="cpu")[0]
        for corrected in (False, True):
            start = time.perf_counter()
            found, note = check_sections(vol, voxel) if corrected else (None, "off")
            check_s = time.perf_counter() - start
            state = segment_boundaries_state(bnd.copy(), voxel, sections=found)
            total_s = time.perf_counter() - start
            seg = state.segmentation_at(DEFAULT_THRESHOLD)
            if per_section:
                seg = per_section_ids(seg)
            row = {
                "volume": name,
                "condition": condition,
                "corrected": corrected,
                "missing_found": [] if found is None else found.to_dict()["missing"],
                "shifted_found": [] if found is None else found.to_dict()["shifted"],
                "shifts_found": None if found is None else found.to_dict()["shifts"],
                "note": note,
                "check_seconds": check_s,
                "fragments_to_tree_seconds": total_s - check_s,
                "scores": scores(seg, gt),
            }
            if condition == "blank":
                keep = np.arange(len(vol)) != blank
                row["scores_without_blank_section"] = scores(seg, gt, keep)
            rows.append(row)
            log(f"{name} {condition} corrected={corrected}: VOI {row['scores']['voi']:.3f}")
    return rows, predict_s


def markdown(res: dict) -> str:
    lines = [
        f"Model: `{res['model']}`; threshold {res['threshold']:g}; torch threads "
        f"{res['threads']}; blank section index {res['blank_index']}, shifted sections "
        f"{res['shifted_sections']} (index in the held-out stack: (dy, dx) px).",
        "",
        "| volume | stack | correction | missing found | shifted found | VOI split "
        "| VOI merge | VOI | ARAND |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        s = r["scores"]
        lines.append(
            f"| {r['volume']} | {r['condition']} | {'on' if r['corrected'] else 'off'} "
            f"| {r['missing_found'] or '-'} | {r['shifted_found'] or '-'} | "
            f"{s['voi_split']:.3f} | {s['voi_merge']:.3f} | {s['voi']:.3f} | {s['arand']:.3f} |"
        )
    lines += [
        "",
        "Blank stack scored without the blank section (continuity through it):",
        "",
        "| volume | correction | VOI split | VOI merge | VOI | ARAND |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        if "scores_without_blank_section" in r:
            s = r["scores_without_blank_section"]
            lines.append(
                f"| {r['volume']} | {'on' if r['corrected'] else 'off'} | "
                f"{s['voi_split']:.3f} | {s['voi_merge']:.3f} | {s['voi']:.3f} | "
                f"{s['arand']:.3f} |"
            )
    lines += ["", "| volume | predict s (clean stack) | section check s (per run) |"]
    lines += ["|---|---:|---:|"]
    for name, t in res["timing"].items():
        lines.append(f"| {name} | {t['predict_s']:.1f} | {t['check_s']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from napari_connectome.models import bundled_model_path, load_model
    from napari_connectome.segmentation import DEFAULT_THRESHOLD

    torch.set_num_threads(args.threads)
    model_path = str(bundled_model_path()) if args.model == "bundled" else args.model
    model = load_model(model_path, device="cpu")
    rows, timing = [], {}
    blank, shifts = 5, {3: (20, 0), 7: (0, -40)}
    isbi = args.data_dir / "isbi2012_cardona_3d.npz"
    if isbi.exists():
        with np.load(isbi) as d:
            raw, truth = d["raw"][20:30], d["labels_cc"][20:30]
        r, t = run_volume(
            "ISBI 2012 z20-29", raw, truth, (50.0, 4.0, 4.0), model, blank, shifts, False
        )
        rows += r
        timing["ISBI 2012 z20-29"] = {"predict_s": t}
    else:
        log(f"skipping ISBI: {isbi} not found")
    vnc = args.data_dir / "drosophila_vnc_stack1.npz"
    if vnc.exists():
        with np.load(vnc) as d:
            raw, membranes = d["raw"][15:20], d["membranes"][15:20]
        vnc_shifts = {1: (20, 0), 3: (0, -40)}
        r, t = run_volume(
            "VNC z15-19 (per section)",
            raw,
            truth_2d_from_membranes(membranes),
            (50.0, 4.6, 4.6),
            model,
            2,
            vnc_shifts,
            True,
        )
        rows += r
        timing["VNC z15-19 (per section)"] = {"predict_s": t}
    else:
        log(f"skipping VNC: {vnc} not found")
    for name in timing:
        checks = [r["check_seconds"] for r in rows if r["volume"] == name and r["corrected"]]
        timing[name]["check_s"] = float(np.mean(checks))
    res = {
        "model": model_path,
        "threshold": DEFAULT_THRESHOLD,
        "threads": torch.get_num_threads(),
        "blank_index": {"ISBI": blank, "VNC": 2},
        "shifted_sections": {
            "ISBI": {str(k): list(v) for k, v in shifts.items()},
            "VNC": {"1": [20, 0], "3": [0, -40]},
        },
        "rows": rows,
        "timing": timing,
    }
    print(json.dumps(res) if args.json else markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
