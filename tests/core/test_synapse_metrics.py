import numpy as np
import pytest

from napari_connectome.core.synapse_metrics import (
    detection_scores,
    match_synapses,
    partner_accuracy,
    pooled_partner_accuracy,
    synapse_positions,
    synapse_regions,
    truth_partner_rows,
)
from napari_connectome.core.synapse_table import SYNAPSE_ROW_DTYPE

ROW = [(name, SYNAPSE_ROW_DTYPE[name]) for name in ("id", "z", "y", "x", "pre", "post")]


def rows(items):
    return np.array(items, dtype=ROW)


def test_hungarian_beats_greedy():
    # greedy nearest-first would match found 0 to truth 1 (distance 10) and leave
    # found 1 without a partner; the optimum matches both
    found = np.array([[0.0, 0.0, 100.0], [0.0, 0.0, 250.0]])
    truth = np.array([[0.0, 0.0, -50.0], [0.0, 0.0, 110.0]])
    m = match_synapses(found, truth, 200.0)
    assert m.tolist() == [[0, 0], [1, 1]]


def test_scores_and_distance():
    found = np.array([[0.0, 0, 0], [0.0, 0, 1000], [0.0, 5000, 0]])
    truth = np.array([[0.0, 0, 150], [0.0, 0, 1250], [0.0, 9000, 0], [0.0, 0, -9000]])
    s = detection_scores(found, truth)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 2, 3)  # 250 nm is too far at 200 nm
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 4)
    assert s["f1"] == pytest.approx(2 / 7)
    s = detection_scores(found, truth, distance_nm=300.0)
    assert s["tp"] == 2


def test_scores_of_empty_inputs():
    none = np.zeros((0, 3))
    assert detection_scores(none, none)["f1"] == 1.0
    s = detection_scores(none, np.ones((2, 3)))
    assert s["recall"] == 0.0 and s["f1"] == 0.0
    s = detection_scores(np.ones((2, 3)), none)
    assert s["precision"] == 0.0 and s["fp"] == 2


def test_positions_from_id_volume_in_nm():
    ids = np.zeros((3, 10, 10), np.uint16)
    ids[1, 2:4, 2:4] = 5
    ids[2, 8, 8] = 9
    pos = synapse_positions(ids, (50.0, 4.0, 4.0))
    np.testing.assert_allclose(pos, [[50.0, 10.0, 10.0], [100.0, 32.0, 32.0]])
    with pytest.raises(ValueError, match="voxel_size"):
        synapse_positions(ids)
    s = detection_scores(ids, ids, (50.0, 4.0, 4.0))
    assert s["f1"] == 1.0 and s["tp"] == 2


def test_partner_accuracy():
    truth = rows(
        [
            (1, 0, 0, 0, 10, 20),
            (1, 0, 0, 0, 10, 21),
            (2, 0, 0, 5000, 30, 40),
            (3, 0, 9000, 0, 50, 60),
        ]
    )
    found = rows(
        [
            (7, 0, 0, 50, 10, 20),
            (7, 0, 0, 50, 10, 21),  # exactly right
            (8, 0, 0, 5050, 30, 41),  # pre right, post wrong
            (9, 0, 20000, 0, 1, 2),
        ]
    )  # a false positive: not scored
    out = partner_accuracy(found, truth)
    assert out["matched"] == 2
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["pre_accuracy"] == pytest.approx(1.0)
    assert out["post_precision"] == pytest.approx(2 / 3)
    assert out["post_recall"] == pytest.approx(2 / 3)


def test_truth_rows_in_nm():
    from napari_connectome.synthetic import SYNAPSE_DTYPE

    table = np.array([(1, 2.0, 3.0, 4.0, 5, 6)], SYNAPSE_DTYPE)
    out = truth_partner_rows(table, (40.0, 4.0, 2.0))
    assert (out["z"][0], out["y"][0], out["x"][0]) == (80.0, 12.0, 8.0)
    assert table["z"][0] == 2.0  # the input is not changed


def test_regions_join_touching_ids_and_split_a_mask():
    annotation = np.zeros((2, 6, 6), np.uint8)
    annotation[0, 1, 1:3] = [227, 254]  # ISBI: one synapse cut into touching ids
    annotation[1, 1, 1] = 12  # the same region one section below
    annotation[0, 4, 4] = 1  # a second synapse, apart
    annotation[1, 4, 5] = 1  # touches it only at an edge: not face-connected
    regions = synapse_regions(annotation)
    assert regions.max() == 3
    assert regions[0, 1, 1] == regions[0, 1, 2] == regions[1, 1, 1]
    assert regions[0, 4, 4] != regions[1, 4, 5]
    assert np.all((regions > 0) == (annotation > 0))


def test_pooled_partner_accuracy_weighs_volumes_by_their_matches():
    pooled = pooled_partner_accuracy(
        [
            {"accuracy": 1.0, "pre_accuracy": 1.0, "matched": 3},
            {"accuracy": 0.0, "pre_accuracy": 0.5, "matched": 1},
        ]
    )
    assert pooled == {"accuracy": 0.75, "pre_accuracy": 0.875, "matched": 4}
    assert pooled_partner_accuracy([]) == {"accuracy": 0.0, "pre_accuracy": 0.0, "matched": 0}
