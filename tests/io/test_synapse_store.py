import numpy as np
import pytest

from napari_connectome.core.synapses import assign_partners, detect_synapses
from napari_connectome.io import VolumeError
from napari_connectome.io.synapse_store import (
    has_synapses,
    read_synapse_store,
    write_synapse_store,
)

VOXEL = (40.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation((4, 64, 64), seed=2)


def synapses_on(result, pre_on_first=True):
    """Two synthetic synapses on the contacts of the first segments of the result."""
    fragments = result.fragments
    table = result.table_at(result.threshold)
    seg = table[fragments]
    prob = np.zeros(fragments.shape, np.float32)
    pre = np.zeros(fragments.shape, np.float32)
    ids, counts = np.unique(seg, return_counts=True)
    big = ids[np.argsort(-counts)][:2]
    a = seg == big[0]
    pre[a] = 1.0
    # synapse voxels: segment a next to any other segment, in sections 1-2
    edge = a & ~np.roll(a, 1, axis=2) | a & ~np.roll(a, -1, axis=2)
    edge[[0, 3]] = False
    prob[edge] = 0.9
    det = detect_synapses(prob, VOXEL, min_size_nm3=0, nms_distance_nm=0, peak_threshold=None)
    return det, assign_partners(det, fragments, pre, table=table)


def test_round_trip(tmp_path, result, write_store):
    store = write_store(result, tmp_path / "seg.zarr", VOXEL)
    assert not has_synapses(store)
    det, table = synapses_on(result)
    assert len(det) > 0
    write_synapse_store(store, det, table, attrs={"model": {"name": "test"}})
    assert has_synapses(store)
    back = read_synapse_store(store)
    np.testing.assert_array_equal(np.asarray(back.labels[...]), det.labels)
    np.testing.assert_allclose(back.detections.positions, det.positions)
    np.testing.assert_allclose(back.detections.confidence, det.confidence)
    np.testing.assert_array_equal(back.detections.sizes, det.sizes)
    assert back.attrs["model"] == {"name": "test"}
    assert back.attrs["partners_from"] == "fragments"
    np.testing.assert_array_equal(back.table.rows(), table.rows())
    assert np.any(table.probes.facing() >= 0)
    np.testing.assert_array_equal(back.table.probes.facing(), table.probes.facing())
    # another fragment-to-segment table: partners follow it
    merged = result.table_at(result.threshold).copy()
    merged[merged > 0] = 1
    other = read_synapse_store(store, segment_table=merged)
    assert set(other.table.pre.tolist()) <= {1}
    assert len(other.table.pairs) == 0  # one segment: nobody is postsynaptic
    # writing again replaces
    write_synapse_store(store, det, None)
    assert read_synapse_store(store).table is None


def test_a_store_without_facing_probes_reads_with_the_contact_rule(tmp_path, result, write_store):
    import zarr

    store = write_store(result, tmp_path / "seg.zarr", VOXEL)
    det, _ = synapses_on(result)
    fragments, table = result.fragments, result.table_at(result.threshold)
    pre = np.zeros(fragments.shape, np.float32)
    older = assign_partners(det, fragments, pre, table=table, facing_nm=())
    write_synapse_store(store, det, older)
    del zarr.open_group(str(store), mode="r+")["synapse_table/probe_facing_from"]
    back = read_synapse_store(store)
    assert back.table.probes.facing_from is None
    np.testing.assert_array_equal(back.table.rows(), older.rows())


def test_bad_stores(tmp_path, result, write_store):
    with pytest.raises(VolumeError, match="no such segmentation store"):
        read_synapse_store(tmp_path / "missing.zarr")
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=2)
    with pytest.raises(VolumeError, match="not a napari-connectome segmentation store"):
        read_synapse_store(tmp_path / "plain.zarr")
    store = write_store(result, tmp_path / "seg.zarr", VOXEL)
    with pytest.raises(VolumeError, match="holds no synapses.*--synapses"):
        read_synapse_store(store)
    det = detect_synapses(np.zeros((4, 64, 63), np.float32), VOXEL, peak_threshold=None)
    with pytest.raises(ValueError, match="shape"):
        write_synapse_store(store, det)
