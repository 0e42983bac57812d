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
    assert isinstance(data, da.Array)  # lazy: napari reads the chunks it shows
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


def _write_ome(path, image, *, voxel=(40.0, 4.0, 4.0), translate=None, labels=False, v05=False):
    """Write a two-level NGFF image (0.4 on zarr v2, or 0.5 on zarr v3), units nm."""
    g = zarr.open_group(str(path), mode="w", zarr_format=3 if v05 else 2)
    datasets = []
    for level in range(2):
        f = 2**level
        g.create_array(str(level), data=image[:, ::f, ::f], chunks=(1, 8, 8))
        transforms = [{"type": "scale", "scale": [voxel[0], voxel[1] * f, voxel[2] * f]}]
        if translate is not None:
            transforms.append({"type": "translation", "translation": list(translate)})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    meta = {"multiscales": [{"axes": axes, "datasets": datasets}]}
    if labels:
        meta["image-label"] = {"colors": []}
    if v05:
        g.attrs["ome"] = {"version": "0.5", **meta}
    else:
        meta["multiscales"][0]["version"] = "0.4"
        g.attrs.update(meta)
    return path


@pytest.mark.parametrize("v05", [False, True])
def test_ome_zarr_translation_and_lazy_levels(tmp_path, vol, v05):
    p = _write_ome(tmp_path / "em.ome.zarr", vol, translate=(80.0, 12.0, -8.0), v05=v05)
    [(data, kw, kind)] = _read(p)
    assert kind == "image" and kw["multiscale"] is True
    assert all(isinstance(level, da.Array) for level in data)
    assert kw["scale"] == pytest.approx((40.0, 4.0, 4.0))
    assert kw["translate"] == pytest.approx((80.0, 12.0, -8.0))
    np.testing.assert_array_equal(data[1].compute(), vol[:, ::2, ::2])


def test_ome_zarr_outer_transform_composes(tmp_path, vol):
    p = _write_ome(tmp_path / "em.zarr", vol, voxel=(1.0, 1.0, 1.0), translate=(1.0, 2.0, 3.0))
    g = zarr.open_group(str(p), mode="r+")
    attrs = g.attrs.asdict()
    attrs["multiscales"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [50.0, 4.0, 4.0]},
        {"type": "translation", "translation": [0.0, 100.0, 0.0]},
    ]
    g.attrs.update(attrs)
    [(_, kw, _)] = _read(p)
    assert kw["scale"] == pytest.approx((50.0, 4.0, 4.0))
    assert kw["translate"] == pytest.approx((50.0, 108.0, 12.0))


def test_image_label_marks_labels_whatever_the_name(tmp_path, vol):
    # uint8 named like an image would be guessed an image; the NGFF mark wins
    p = _write_ome(tmp_path / "raw.ome.zarr", vol, labels=True)
    [(data, kw, kind)] = _read(p)
    assert kind == "labels" and kw["multiscale"] is True
    assert "contrast_limits" not in kw


def test_exported_ome_zarr_opens_as_multiscale_labels(tmp_path):
    from napari_connectome.io.export import export_labels

    labels = np.zeros((2, 300, 300), np.uint8)  # 8-bit ids: only the metadata says labels
    labels[:, 100:200, 50:250] = 3
    out = export_labels(labels, tmp_path / "cells.ome.zarr", voxel_size=(40, 4, 4))
    [(data, kw, kind)] = _read(out)
    assert kind == "labels" and kw["multiscale"] is True and len(data) >= 2
    assert kw["scale"] == pytest.approx((40.0, 4.0, 4.0))
    assert all(isinstance(level, da.Array) for level in data)
    np.testing.assert_array_equal(data[0].compute(), labels)


def test_segmentation_store_gives_boundaries_and_label_layers(
    tmp_path, phantom_segmentation, write_store
):
    result = phantom_segmentation((2, 48, 48), 3)
    store = write_store(result, tmp_path / "out.zarr")
    layers = _read(store)
    assert [(kw["name"], kind) for _, kw, kind in layers] == [
        ("boundaries", "image"),
        ("fragments", "labels"),
        ("segmentation", "labels"),
    ]
    assert all(isinstance(data, da.Array) for data, _, _ in layers)
    assert all(kw["scale"] == (40.0, 4.0, 4.0) for _, kw, _ in layers)
    np.testing.assert_array_equal(layers[2][0].compute(), result.segmentation_at(0.5))
    [(_, kw, kind)] = _read(f"{store}:fragments")
    assert kind == "labels"


def test_big_single_scale_zarr_gets_a_lazy_pyramid(tmp_path, monkeypatch):
    from napari_connectome.io import multiscale

    p = tmp_path / "big.zarr"
    z = zarr.open_array(str(p), mode="w", shape=(3, 96, 80), chunks=(1, 32, 32), dtype="uint8")
    z[:] = (np.arange(3 * 96 * 80).reshape(3, 96, 80) % 251).astype(np.uint8)
    z.attrs["voxel_size"] = [40, 4, 4]  # anisotropic: strided in y and x only
    [(data, kw, _)] = _read(p)
    assert "multiscale" not in kw and isinstance(data, da.Array)  # small: no pyramid
    monkeypatch.setattr(multiscale, "LAZY_PYRAMID_PLANE_PX", 64)
    monkeypatch.setattr(multiscale, "LAZY_PYRAMID_MAX_SIZE", 32)
    [(data, kw, _)] = _read(p)
    assert kw["multiscale"] is True
    assert [level.shape for level in data] == [(3, 96, 80), (3, 48, 40), (3, 24, 20)]
    np.testing.assert_array_equal(data[2].compute(), z[:, ::4, ::4])
