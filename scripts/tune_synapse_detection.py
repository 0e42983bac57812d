"""Choose the synapse detection defaults on training sections only.

Predicts the synapse maps of training sections (ISBI z 8-17, VNC stack 1 z 5-9 and the
training phantom seed 0; never the held-out ISBI z 20-29, VNC z 15-19 or the benchmark
phantoms) with a synapse model, sweeps the probability threshold and the size floor of
:func:`napari_connectome.core.synapses.detect_synapses`, and prints the detection F1 of
each setting and the one with the best mean F1 (the values to put in
``DETECTION_DEFAULTS``).

Usage::

    python scripts/tune_synapse_detection.py [--model WEIGHTS] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
MIN_SIZES_NM3 = (0.0, 5e4, 2e5, 5e5)
TRAINING_SECTIONS = {
    "isbi2012_cardona_3d.npz": ((50.0, 4.0, 4.0), slice(8, 18)),
    "drosophila_vnc_stack1.npz": ((50.0, 4.6, 4.6), slice(5, 10)),
}


def training_maps(model, data_dir: Path) -> list[tuple]:
    """Predicted synapse maps and truth objects of the training sections."""
    from napari_connectome.models.synapse_inference import predict_synapse_maps
    from napari_connectome.synthetic import make_phantom

    sets = []
    for name, (voxel, sections) in TRAINING_SECTIONS.items():
        path = data_dir / name
        if not path.exists():
            continue
        with np.load(path) as archive:
            raw, truth = archive["raw"][sections], archive["synapses"][sections]
        truth = ndi.label(truth > 0)[0] if truth.max() <= 1 else truth
        synapse, _ = predict_synapse_maps(raw, voxel, model, device="cpu")
        sets.append((name.split("_")[0], synapse, truth, voxel))
    voxel = (40.0, 4.0, 4.0)
    phantom = make_phantom((24, 384, 384), voxel, seed=0, synapse_density=10.0)
    synapse, _ = predict_synapse_maps(phantom.raw, voxel, model, device="cpu")
    sets.append(("phantom0", synapse, phantom.synapses, voxel))
    return sets


def main() -> None:
    """Print the sweep and the best setting."""
    from napari_connectome.core.synapse_metrics import detection_scores
    from napari_connectome.core.synapses import detect_synapses
    from napari_connectome.models.synapse_inference import load_synapse_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="synapse weights (default: bundled)")
    parser.add_argument("--data-dir", default="../shared/data")
    args = parser.parse_args()
    model = load_synapse_model(args.model)
    sets = training_maps(model, Path(args.data_dir))
    names = [s[0] for s in sets]
    print("| threshold | min size (nm^3) | " + " | ".join(names) + " | mean F1 |")
    print("|---:|---:|" + "---:|" * (len(names) + 1))
    best = None
    for threshold in THRESHOLDS:
        for min_size in MIN_SIZES_NM3:
            f1 = [
                detection_scores(
                    detect_synapses(syn, voxel, threshold=threshold, min_size_nm3=min_size),
                    truth,
                    voxel,
                )["f1"]
                for _, syn, truth, voxel in sets
            ]
            mean = float(np.mean(f1))
            cells = " | ".join(f"{v:.3f}" for v in f1)
            print(f"| {threshold} | {min_size:g} | {cells} | {mean:.3f} |", flush=True)
            if best is None or mean > best[0]:
                best = (mean, threshold, min_size)
    print(f"best mean F1 {best[0]:.3f}: threshold {best[1]}, min_size_nm3 {best[2]:g}")


if __name__ == "__main__":
    main()
