"""Proofreading on real EM: fixing a true split and a true merge lowers the VOI.

A crop of the held-out ISBI 2012 sections is segmented by the bundled model through
the command line; then one false split and one false merge, found with the truth, are
fixed with ``napari-connectome proofread``, and the scores move the right way.
"""

from pathlib import Path

import numpy as np
import pytest

from napari_connectome.cli import main
from napari_connectome.core.metrics import contingency_table, evaluate_segmentation
from napari_connectome.io.journal import open_proofreading
from napari_connectome.models import bundled_model_path

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "isbi2012_cardona_3d.npz"

pytestmark = [
    pytest.mark.skipif(not DATA.exists(), reason=f"real data not found at {DATA}"),
    pytest.mark.skipif(not bundled_model_path().exists(), reason="bundled model not installed"),
]


def _labels(store):
    session = open_proofreading(store)
    session.close()
    state = session.state
    box = tuple(slice(0, n) for n in state.fragments.shape)
    return state, state.labels_in(box)


def _largest_overlaps(seg, truth):
    table = contingency_table(seg, truth)
    order = np.argsort(table.counts)[::-1]
    return [
        (int(table.segmentation_ids[table.rows[i]]), int(table.ground_truth_ids[table.cols[i]]))
        for i in order
    ], table


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with np.load(DATA) as archive:
        raw = archive["raw"][20:24, :256, :256]
        truth = archive["labels_cc"][20:24, :256, :256]
    folder = tmp_path_factory.mktemp("real")
    np.save(folder / "raw.npy", raw)
    out = folder / "isbi.zarr"
    assert (
        main(["segment", str(folder / "raw.npy"), str(out), "--voxel-size", "50", "4", "4"]) == 0
    )
    return out, truth


def test_fixing_a_false_split_and_a_false_merge_on_real_em(store, capsys):
    path, truth = store
    state, seg = _labels(path)
    before = evaluate_segmentation(seg, truth)
    pairs, _ = _largest_overlaps(seg, truth)

    # A false split: the two biggest pieces of one truth neuron in different segments.
    pieces: dict[int, list[int]] = {}
    for segment, neuron in pairs:
        pieces.setdefault(neuron, []).append(segment)
    neuron, (a, b) = next((n, s[:2]) for n, s in pieces.items() if len(s) >= 2)
    assert main(["proofread", str(path), "--merge", str(a), str(b)]) == 0
    state, seg = _labels(path)
    merged = evaluate_segmentation(seg, truth)
    assert merged["voi_split"] < before["voi_split"]

    # A false merge: one segment holding big parts of two truth neurons; one seed in each.
    owners: dict[int, list[int]] = {}
    for segment, neuron in pairs[:200]:
        owners.setdefault(segment, []).append(neuron)
    segment, (n1, n2) = next((s, n[:2]) for s, n in owners.items() if len(n) >= 2)
    seeds = []
    for neuron in (n1, n2):
        z, y, x = np.argwhere((seg == segment) & (truth == neuron))[0]
        seeds += ["--seeds", f"{z},{y},{x}"]
    assert main(["proofread", str(path), "--split", str(segment), *seeds]) == 0
    state, seg = _labels(path)
    split = evaluate_segmentation(seg, truth)
    assert split["voi_merge"] < merged["voi_merge"]
    assert main(["proofread", str(path), "--history"]) == 0
    history = capsys.readouterr().out
    assert "merge" in history and "split" in history
