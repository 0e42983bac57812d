"""Tests for the npe2 reader (no viewer, no Qt)."""

from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest
import zarr

from napari_connectome._reader import looks_like_labels, napari_get_reader
from napari_connectome.io import VolumeError

# tests/test_reader.py -> repository root -> its parent holds shared/
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/isbi2012_cardona_3d.npz"


@pytest.fixture
def vol():
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, size=(4, 20, 24), dtype=np.uint8)


def _read(path):
    reader = napari_get_reader(str(path))
    assert callable(reader)
    return reader(str(path))


def test_returns_none_for_what_it_cannot_read(tmp_path, vol):
    np.save(tmp_path / "a.npy", vol)
    np.save(tmp_path / "b.npy", vol)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    assert napari_get_reader([str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]) is None
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(tmp_path / "missing.npy")) is None
    assert napari_get_reader(str(tmp_path / "folder")) is None
    assert callable(napari_get_reader([str(tmp_path / "a.npy")]))


def test_npz_container_gives_matching_layers_image_first(tmp_path, vol):
    p = tmp_path / "vol.npz"
    np.savez(
        p,
        labels=vol.astype(np.uint32),
        raw=vol,
        synapses=(vol > 200).astype(np.uint8),
        other_shape=vol[:, :10],
        voxel_size=np.array([50.0, 4.0, 4.0]),
    )
    layers = _read(p)
    assert [(kw["name"], kind) for _, kw, kind in layers] == [
        ("raw", "image"),
        ("labels", "labels"),
        ("synapses", "labels"),
    ]
    data, kw, _ = layers[0]
    np.testing.assert_array_equal(data, vol)
    assert kw["scale"] == (50.0, 4.0, 4.0)
    assert kw["contrast_limits"] == (0, 255)
    assert kw["metadata"] == {"source": f"{p}:raw", "voxel_size_nm": (50.0, 4.0, 4.0)}
    assert all(k["scale"] == (50.0, 4.0, 4.0) for _, k, _ in layers)


def test_hdf5_container_lazy_layers(tmp_path, vol):
    p = tmp_path / "vol.h5"
    with h5py.File(p, "w") as f:
        f["volumes/raw"] = vol.astype(np.uint16)  # 16-bit raw stays an image
        f["volumes/labels/neuron_ids"] = vol.astype(np.uint64)
        f["volumes/raw"].attrs["resolution"] = [40, 4, 4]
    layers = _read(p)
    assert [(kw["name"], kind) for _, kw, kind in layers] == [
        ("raw", "image"),
        ("neuron_ids", "labels"),
    ]
    assert isinstance(layers[0][0], da.Array)
    assert "contrast_limits" not in layers[0][1]
    assert layers[0][1]["scale"] == (40.0, 4.0, 4.0)


def test_ome_zarr_multiscale_layer(tmp_path, vol):
    p = tmp_path / "img.zarr"
    g = zarr.open_group(str(p), mode="w")
    g.create_array("0", data=vol)
    g.create_array("1", data=vol[:, ::2, ::2])
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    datasets = [
        {
            "path": "0",
            "coordinateTransformations": [{"type": "scale", "scale": [0.05, 0.004, 0.004]}],
        },
        {
            "path": "1",
            "coordinateTransformations": [{"type": "scale", "scale": [0.05, 0.008, 0.008]}],
        },
    ]
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}
    [(data, kw, kind)] = _read(p)
    assert kind == "image"
    assert kw["multiscale"] is True
    assert isinstance(data, list) and [d.shape for d in data] == [(4, 20, 24), (4, 10, 12)]
    assert kw["scale"] == pytest.approx((50.0, 4.0, 4.0))
    assert kw["name"] == "img"


def test_path_inside_zarr_gives_that_array_only(tmp_path, vol):
    p = tmp_path / "vol.zarr"
    g = zarr.open_group(str(p), mode="w")
    g.create_array("raw", data=vol)
    g.create_array("seg", data=vol.astype(np.uint64))
    [(data, kw, kind)] = _read(p / "seg")
    assert kind == "labels" and kw["name"] == "seg"
    assert isinstance(data, zarr.Array)
    assert [k["name"] for _, k, _ in _read(p)] == ["raw", "seg"]


def test_container_without_default_name(tmp_path, vol):
    p = tmp_path / "vol.npz"
    np.savez(p, cells=vol.astype(np.uint32), stack=vol)
    assert [(k["name"], t) for _, k, t in _read(p)] == [("stack", "image"), ("cells", "labels")]


def test_unreadable_volume_raises_volume_error(tmp_path):
    np.save(tmp_path / "rgb.npy", np.zeros((2, 8, 8, 3), np.uint8))
    reader = napari_get_reader(str(tmp_path / "rgb.npy"))
    with pytest.raises(VolumeError, match="grayscale"):
        reader(str(tmp_path / "rgb.npy"))


@pytest.mark.parametrize(
    ("name", "dtype", "expected"),
    [
        ("raw", np.uint8, False),
        ("raw", np.uint16, False),
        ("labels_cc", np.uint32, True),
        ("synapses", np.uint8, True),
        ("mitochondria", np.uint8, True),
        ("neuron_ids", np.uint64, True),
        ("gt", np.uint8, True),
        ("membranes", np.uint8, False),
        ("membranes", np.float32, False),
        ("fragments", np.uint64, True),
    ],
)
def test_looks_like_labels(name, dtype, expected):
    assert looks_like_labels(name, dtype) is expected


def test_real_isbi_volume():
    if not REAL_DATA.is_file():
        pytest.skip(f"real data not present: {REAL_DATA}")
    layers = _read(f"{REAL_DATA}:raw")
    [(data, kw, kind)] = layers
    assert kind == "image"
    assert data.shape == (30, 512, 512)
    assert data.dtype == np.uint8
    assert kw["name"] == "raw"
