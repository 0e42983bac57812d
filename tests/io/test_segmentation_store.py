import dataclasses
import json
import shutil

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

from napari_connectome.core.agglomeration import segment_table
from napari_connectome.core.region_graph import RegionGraph, build_region_graph
from napari_connectome.io import (
    OutputExistsError,
    VolumeError,
    open_volume,
    read_segmentation_store,
    write_segmentation_store,
)
from napari_connectome.io import segmentation_store as store_module
from napari_connectome.segmentation import segment_boundaries_state
from napari_connectome.synthetic import make_phantom

VOXEL = (40.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def state():
    phantom = make_phantom((4, 96, 96), VOXEL, seed=3)
    membranes = phantom.membranes.astype(np.float32)
    rng = np.random.default_rng(0)
    bnd = ndi.gaussian_filter(membranes, (0, 1, 1)) + rng.normal(0, 0.05, membranes.shape)
    bnd = np.clip(bnd, 0, 1).astype(np.float32)
    return segment_boundaries_state(bnd, VOXEL, threshold=0.4, model={"name": "test"})


def _attrs(result, **extra):
    return {
        "voxel_size": list(result.voxel_size),
        "threshold": result.threshold,
        "model": {"name": "test", "config": {"depth": 2, "norm": "batch"}},
        "input": "phantom.npz:raw",
        **extra,
    }


def _write(path, result, **kw):
    kw.setdefault("attrs", _attrs(result))
    return write_segmentation_store(
        path,
        boundaries=result.boundaries,
        fragments=result.fragments,
        graph=result.graph,
        tree=result.tree,
        **kw,
    )


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _assert_same_dataclass(a, b):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert y.dtype == x.dtype, f.name
            np.testing.assert_array_equal(y, x, err_msg=f.name)
        else:
            assert y == x, f.name


def test_round_trip(tmp_path, state):
    assert state.graph.n_edges > 5 and len(state.tree) > 5
    out = _write(tmp_path / "seg.zarr", state, segmentation=state.segmentation)
    stored = read_segmentation_store(out)
    assert stored.shape == state.fragments.shape
    assert stored.boundaries.dtype == np.uint8
    assert stored.fragments.dtype == np.uint64
    assert stored.segmentation.dtype == np.uint32
    np.testing.assert_array_equal(stored.fragments[...], state.fragments)
    np.testing.assert_array_equal(stored.segmentation[...], state.segmentation)
    boundaries = stored.load_boundaries()
    assert boundaries.dtype == np.float32
    assert np.abs(boundaries - state.boundaries).max() <= 0.5 / 255 + 1e-6
    _assert_same_dataclass(state.graph, stored.graph)
    _assert_same_dataclass(state.tree, stored.tree)
    assert stored.tree.n_fragments == state.n_fragments
    for key, value in _attrs(state).items():
        assert stored.attrs[key] == value
    assert stored.voxel_size == VOXEL and stored.threshold == pytest.approx(0.4)
    assert stored.attrs["axes"] == ["z", "y", "x"]
    assert stored.attrs["napari_connectome_version"]
    assert stored.attrs["created"].startswith("20")
    for t in (0.0, 0.3, 0.6, 1.0):
        np.testing.assert_array_equal(stored.segmentation_at(t), state.segmentation_at(t))
        np.testing.assert_array_equal(stored.table_at(t), state.table_at(t))


def test_stored_boundaries_rebuild_the_same_graph(tmp_path, state):
    stored = read_segmentation_store(_write(tmp_path / "seg.zarr", state))
    graph = build_region_graph(
        state.fragments, stored.load_boundaries(), VOXEL, n_fragments=state.n_fragments
    )
    _assert_same_dataclass(state.graph, graph)


def test_plain_zarr_v2_layout(tmp_path, state):
    out = _write(tmp_path / "seg.zarr", state)
    assert (out / ".zgroup").is_file() and (out / ".zattrs").is_file()
    attrs = json.loads((out / ".zattrs").read_text())
    assert attrs["format"] == "napari-connectome-segmentation"
    root = zarr.open_group(str(out), mode="r")
    assert set(root.array_keys()) == {"boundaries", "fragments", "segmentation"}
    assert set(root.group_keys()) == {"region_graph", "merge_tree"}
    fields = {f.name for f in dataclasses.fields(RegionGraph)}
    assert fields | {"mean_score"} == set(root["region_graph"].array_keys())
    np.testing.assert_allclose(root["region_graph/mean_score"][...], state.graph.mean_score)
    assert root["merge_tree"].attrs["n_fragments"] == state.n_fragments
    assert root["boundaries"].attrs["scale"] == pytest.approx(1 / 255)
    assert root["fragments"].chunks == (1, 96, 96)  # one section per chunk (anisotropic)
    # the package's own reader finds the voxel size
    assert open_volume(f"{out}:segmentation").voxel_size == VOXEL


def test_segmentation_computed_from_the_tree_when_omitted(tmp_path, state):
    stored = read_segmentation_store(_write(tmp_path / "seg.zarr", state))
    table = segment_table(state.tree, state.n_fragments, 0.4)
    np.testing.assert_array_equal(stored.segmentation[...], table[state.fragments])
    assert (stored.segmentation[...] > 0).all()


def test_2d_state_and_isotropic_chunks(tmp_path, state):
    result2d = segment_boundaries_state(state.boundaries[1], (4.0, 4.0), threshold=0.5)
    stored = read_segmentation_store(_write(tmp_path / "a.zarr", result2d, attrs=_attrs(result2d)))
    assert stored.attrs["axes"] == ["y", "x"]
    np.testing.assert_array_equal(stored.segmentation[...], result2d.segmentation)
    assert store_module.store_chunks((200, 300, 300), (8, 8, 8)) == (64, 256, 256)


def test_state_without_edges(tmp_path):
    result = segment_boundaries_state(np.zeros((16, 16), np.float32), (4.0, 4.0))
    stored = read_segmentation_store(_write(tmp_path / "one.zarr", result, attrs=_attrs(result)))
    assert stored.graph.n_edges == 0 and len(stored.tree) == 0
    assert stored.graph.edges.shape == (0, 2)
    np.testing.assert_array_equal(stored.segmentation[...], result.segmentation)


class _Failing:
    """An array-like that breaks after a few reads, like a crash half-way through."""

    def __init__(self, data, after, error=RuntimeError):
        self.data, self.after, self.error = data, after, error
        self.shape, self.dtype = data.shape, data.dtype

    def __getitem__(self, key):
        self.after -= 1
        if self.after < 0:
            raise self.error("disk on fire")
        return self.data[key]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_write_leaves_nothing(tmp_path, state, error):
    with pytest.raises(error):
        write_segmentation_store(
            tmp_path / "seg.zarr",
            boundaries=state.boundaries,
            fragments=_Failing(state.fragments, 1, error),
            graph=state.graph,
            tree=state.tree,
            attrs=_attrs(state),
        )
    assert list(tmp_path.iterdir()) == []


def test_failure_late_in_the_write_leaves_nothing(tmp_path, state, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(store_module, "_write_dataclass", boom)
    with pytest.raises(OSError, match="no space"):
        _write(tmp_path / "seg.zarr", state)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path, state):
    out = _write(tmp_path / "seg.zarr", state)
    untouched = _Failing(state.fragments, 0)  # would raise if the write started
    with pytest.raises(OutputExistsError, match="overwrite") as info:
        write_segmentation_store(
            out,
            boundaries=state.boundaries,
            fragments=untouched,
            graph=state.graph,
            tree=state.tree,
            attrs=_attrs(state),
        )
    assert isinstance(info.value, FileExistsError)
    assert read_segmentation_store(out).attrs["input"] == "phantom.npz:raw"


def test_overwrite_replaces_only_after_success(tmp_path, state):
    out = _write(tmp_path / "seg.zarr", state)
    with pytest.raises(RuntimeError):
        write_segmentation_store(
            out,
            boundaries=state.boundaries,
            fragments=_Failing(state.fragments, 0),
            graph=state.graph,
            tree=state.tree,
            attrs=_attrs(state, input="new"),
            overwrite=True,
        )
    assert read_segmentation_store(out).attrs["input"] == "phantom.npz:raw"
    assert _leftovers(tmp_path) == []
    _write(out, state, attrs=_attrs(state, input="new"), overwrite=True)
    assert read_segmentation_store(out).attrs["input"] == "new"
    assert _leftovers(tmp_path) == []


def test_never_replaces_what_is_not_a_store(tmp_path, state):
    folder = tmp_path / "mine.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(VolumeError, match="not a zarr store"):
        _write(folder, state, overwrite=True)
    assert (folder / "notes.txt").read_text() == "precious"
    file = tmp_path / "file.zarr"
    file.write_text("x")
    with pytest.raises(VolumeError, match="not a zarr store"):
        _write(file, state, overwrite=True)


def test_bad_inputs(tmp_path, state):
    with pytest.raises(ValueError, match="voxel_size"):
        _write(tmp_path / "a.zarr", state, attrs={"threshold": 0.5})
    with pytest.raises(ValueError, match="shape"):
        write_segmentation_store(
            tmp_path / "b.zarr",
            boundaries=state.boundaries,
            fragments=state.fragments[:2],
            graph=state.graph,
            tree=state.tree,
            attrs=_attrs(state),
        )
    with pytest.raises(VolumeError, match="does not exist"):
        _write(tmp_path / "no" / "c.zarr", state)
    assert _leftovers(tmp_path) == []


def test_read_errors(tmp_path, state):
    with pytest.raises(VolumeError, match="no such"):
        read_segmentation_store(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=2)
    with pytest.raises(VolumeError, match="not a napari-connectome segmentation store"):
        read_segmentation_store(tmp_path / "plain.zarr")
    out = _write(tmp_path / "seg.zarr", state)
    shutil.rmtree(out / "merge_tree")
    with pytest.raises(VolumeError, match="incomplete"):
        read_segmentation_store(out)
