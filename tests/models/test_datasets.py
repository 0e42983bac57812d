import numpy as np
import pytest

from napari_connectome.models.datasets import (
    REAL_VOLUMES,
    DataSource,
    default_sources,
    held_out_volumes,
    load_source,
    phantom_series,
    phantom_volumes,
    real_sources,
    training_volumes,
)
from napari_connectome.models.synapse_data import default_synapse_sources


def _save(path, depth):
    raw = np.arange(depth * 16, dtype=np.uint8).reshape(depth, 4, 4)
    np.savez(path, raw=raw, membranes=raw % 2, synapses=raw % 3, labels=raw + 1)


def test_both_networks_hold_out_the_same_real_sections(tmp_path):
    for name, depth in (("isbi2012_cardona_3d", 30), ("drosophila_vnc_stack1", 20)):
        _save(tmp_path / f"{name}.npz", depth)
    boundary = {s.label: s for s in default_sources(tmp_path)}
    synapse = {s.label: s for s in default_synapse_sources(tmp_path)}
    assert set(boundary) == set(synapse) == {"isbi2012_cardona_3d", "drosophila_vnc_stack1"}
    assert boundary["isbi2012_cardona_3d"].held_out(30) == list(range(20, 30))
    assert boundary["drosophila_vnc_stack1"].held_out(20) == list(range(15, 20))
    for name, source in boundary.items():
        assert synapse[name].held_out(30) == source.held_out(30)
        assert synapse[name].voxel_size == source.voxel_size == REAL_VOLUMES[name][0]
        assert source.membranes == "membranes" and synapse[name].membranes == "synapses"


def test_real_sources_skip_missing_files_and_take_fields(tmp_path):
    _save(tmp_path / "gala_fib_train.npz", 12)
    assert real_sources(tmp_path, ["isbi2012_cardona_3d"]) == []
    (gala,) = real_sources(tmp_path, ["gala_fib_train"], membranes=None, labels="labels")
    assert gala.labels == "labels" and gala.membranes is None and gala.holdout_last == 10
    assert default_sources(tmp_path) == [gala]
    with pytest.raises(KeyError):
        real_sources(tmp_path, ["unknown_volume"])


def test_training_and_held_out_sections_split_the_volume(tmp_path):
    _save(tmp_path / "v.npz", 8)
    source = DataSource(str(tmp_path / "v.npz"), (40.0, 4.0, 4.0), holdout_last=2, holdout=[1])
    ((same, raw, truth, sections),) = training_volumes([source])
    assert same is source and sections == [0, 2, 3, 4, 5]
    np.testing.assert_array_equal(load_source(source)[1], truth)
    assert raw.shape == (8, 4, 4) and truth.dtype == bool
    (held,) = held_out_volumes([source])
    assert held["sections"] == [1, 6, 7] and held["name"] == "v"
    np.testing.assert_array_equal(held["raw"], raw[[1, 6, 7]])
    np.testing.assert_array_equal(held["truth"], truth[[1, 6, 7]])
    ids = held_out_volumes([source], truth=lambda s, archive: archive["synapses"])[0]["truth"]
    assert ids.max() == 2  # the truth function's array, not a boundary mask
    nothing_held = DataSource(str(tmp_path / "v.npz"), (40.0, 4.0, 4.0))
    assert held_out_volumes([nothing_held]) == []


def test_phantoms_alternate_anisotropic_and_isotropic():
    pytest.importorskip("napari_connectome.synthetic")
    series = list(phantom_series(3, (4, 64, 64), seed=7))
    assert [name for name, _ in series] == ["phantom0", "phantom1", "phantom2"]
    shapes = [p.raw.shape for _, p in series]
    assert shapes == [(4, 64, 64), (32, 32, 32), (4, 64, 64)]
    voxels = [tuple(float(v) for v in p.voxel_size) for _, p in series]
    assert voxels[0] == (40.0, 4.0, 4.0) and voxels[1] == (8.0, 8.0, 8.0)
    assert voxels[2] == (40.0, 5.0, 5.0)
    volumes = phantom_volumes(2, (4, 64, 64), seed=7)
    np.testing.assert_array_equal(volumes[0]["raw"], series[0][1].raw)
    assert volumes[1]["target"].dtype == bool
    assert phantom_volumes(0) == []
