"""Tests for napari_connectome.io.volumes: every format, specs, laziness, errors."""

import gc
import time

import dask.array as da
import h5py
import numpy as np
import pytest
import tifffile
import zarr

from napari_connectome.io import (
    Volume,
    VolumeError,
    list_arrays,
    open_volume,
    parse_volume_spec,
    read_array,
)


@pytest.fixture
def vol():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(5, 24, 32), dtype=np.uint8)


def _ome_04(path, data, units="micrometer", zarr_format=2):
    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    g.create_array("0", data=data, chunks=(1, 8, 8))
    g.create_array("1", data=data[:, ::2, ::2], chunks=(1, 8, 8))
    axes = [{"name": n, "type": "space", "unit": units} for n in "zyx"]
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
    g.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    return g


# ------------------------------------------------------------------ round trips


def test_npy_round_trip_is_memory_mapped(tmp_path, vol):
    np.save(tmp_path / "vol.npy", vol)
    v = open_volume(tmp_path / "vol.npy")
    assert isinstance(v, Volume)
    assert isinstance(v.data, np.memmap)
    np.testing.assert_array_equal(v.data, vol)
    assert v.voxel_size is None
    assert v.name == "vol"
    assert v.levels[0] is v.data and len(v.levels) == 1


def test_npz_round_trip_with_voxel_size(tmp_path, vol):
    p = tmp_path / "vol.npz"
    np.savez_compressed(p, raw=vol, labels=vol.astype(np.uint32), voxel_size=np.array([50, 4, 4]))
    v = open_volume(p)  # default: raw
    np.testing.assert_array_equal(v.data, vol)
    assert v.name == "raw"
    assert v.voxel_size == (50.0, 4.0, 4.0)
    lab = open_volume(f"{p}:labels")
    assert lab.dtype == np.uint32 and lab.name == "labels"
    assert list_arrays(p) == ["raw", "labels"]  # voxel_size left out


def test_npz_only_array_is_default(tmp_path, vol):
    np.savez(tmp_path / "one.npz", something=vol)
    assert open_volume(tmp_path / "one.npz").name == "something"


def test_hdf5_round_trip_lazy_with_resolution(tmp_path, vol):
    p = tmp_path / "vol.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("volumes/raw", data=vol, chunks=(1, 8, 8))
        f["volumes/raw"].attrs["resolution"] = [40, 4, 4]
        f.create_dataset("volumes/labels/neuron_ids", data=vol.astype(np.uint64))
    v = open_volume(f"{p}:/volumes/raw")
    assert isinstance(v.data, da.Array)
    assert v.voxel_size == (40.0, 4.0, 4.0)
    assert v.name == "raw"
    gc.collect()  # the file must stay open through the dask graph
    np.testing.assert_array_equal(v.data.compute(), vol)
    np.testing.assert_array_equal(v.data[2, 3:5].compute(), vol[2, 3:5])
    assert open_volume(p).name == "raw"  # default volumes/raw
    assert sorted(list_arrays(p)) == ["volumes/labels/neuron_ids", "volumes/raw"]
    assert open_volume(p / "volumes/labels/neuron_ids").dtype == np.uint64


def test_hdf5_element_size_um(tmp_path, vol):
    p = tmp_path / "vol.hdf5"
    with h5py.File(p, "w") as f:
        f["data"] = vol
        f["data"].attrs["element_size_um"] = [0.05, 0.004, 0.004]
    assert open_volume(p).voxel_size == pytest.approx((50.0, 4.0, 4.0))


def test_tiff_imagej_round_trip_voxel_size(tmp_path, vol):
    p = tmp_path / "vol.tif"
    tifffile.imwrite(
        p,
        vol,
        imagej=True,
        resolution=(1 / 0.004, 1 / 0.004),
        metadata={"spacing": 0.05, "unit": "um", "axes": "ZYX"},
    )
    v = open_volume(p)
    np.testing.assert_array_equal(np.asarray(v.data), vol)
    assert v.voxel_size == pytest.approx((50.0, 4.0, 4.0))


def test_tiff_compressed_is_lazy(tmp_path, vol):
    p = tmp_path / "vol.tiff"
    tifffile.imwrite(p, vol, compression="zlib")
    v = open_volume(p)
    assert isinstance(v.data, da.Array)
    gc.collect()
    np.testing.assert_array_equal(v.data.compute(), vol)
    assert v.voxel_size is None


def test_tiff_2d(tmp_path, vol):
    tifffile.imwrite(tmp_path / "plane.tif", vol[0])
    v = open_volume(tmp_path / "plane.tif")
    assert v.shape == (24, 32)
    np.testing.assert_array_equal(read_array(tmp_path / "plane.tif"), vol[0])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_array_and_group(tmp_path, vol, zarr_format):
    p = tmp_path / "vol.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=zarr_format)
    raw = g.create_array("raw", data=vol, chunks=(1, 8, 8))
    raw.attrs["voxel_size"] = [30, 6, 6]
    g.create_array("labels", data=vol.astype(np.uint64), chunks=(1, 8, 8))
    g.create_group("nested").create_array("mito", data=vol.astype(np.uint16))
    for spec in (p, f"{p}:raw", f"{p}/raw", f"{p}:/raw"):
        v = open_volume(spec)
        assert isinstance(v.data, zarr.Array), spec
        assert v.voxel_size == (30.0, 6.0, 6.0)
        assert v.name == "raw"
        np.testing.assert_array_equal(v.data[:], vol)
    assert open_volume(f"{p}/nested/mito").dtype == np.uint16
    assert list_arrays(p) == ["labels", "raw", "nested/mito"]
    assert isinstance(read_array(f"{p}:labels"), np.ndarray)


def test_zarr_root_array_resolution_attr(tmp_path, vol):
    p = tmp_path / "arr.zarr"
    z = zarr.create_array(str(p), shape=vol.shape, dtype=vol.dtype, zarr_format=2)
    z[:] = vol
    z.attrs["resolution"] = [45, 4.6, 4.6]
    v = open_volume(p)
    assert v.voxel_size == (45.0, 4.6, 4.6)
    assert v.name == "arr"
    assert list_arrays(p) == []


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_04_multiscale_micrometer_to_nm(tmp_path, vol, zarr_format):
    p = tmp_path / "img.ome.zarr"
    _ome_04(p, vol, zarr_format=zarr_format)
    v = open_volume(p)
    assert isinstance(v.data, zarr.Array)
    assert len(v.levels) == 2
    assert v.levels[0].shape == (5, 24, 32) and v.levels[1].shape == (5, 12, 16)
    assert v.voxel_size == pytest.approx((50.0, 4.0, 4.0))
    assert v.name == "img"
    assert list_arrays(p) == ["/"]
    np.testing.assert_array_equal(v.levels[1][:], vol[:, ::2, ::2])


def test_ome_zarr_05_squeezes_singleton_channel_and_time(tmp_path, vol):
    p = tmp_path / "img.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=3)
    g.create_array("s0", data=vol[None, None], chunks=(1, 1, 1, 8, 8))
    axes = [
        {"name": "t", "type": "time", "unit": "second"},
        {"name": "c", "type": "channel"},
        *({"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"),
    ]
    scale = [{"type": "scale", "scale": [1.0, 1.0, 40.0, 8.0, 8.0]}]
    g.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {"axes": axes, "datasets": [{"path": "s0", "coordinateTransformations": scale}]}
        ],
    }
    v = open_volume(p)
    assert v.shape == (5, 24, 32)
    assert v.voxel_size == (40.0, 8.0, 8.0)
    np.testing.assert_array_equal(np.asarray(v.data), vol)
    assert open_volume(p, grayscale=False).shape == (1, 1, 5, 24, 32)


def test_ome_zarr_labels_group_listed(tmp_path, vol):
    p = tmp_path / "img.zarr"
    g = _ome_04(p, vol)
    _ome_04(p / "labels" / "cells", vol.astype(np.uint32))
    g.create_group("labels").attrs["labels"] = ["cells"]
    assert list_arrays(p) == ["/", "labels/cells"]
    cells = open_volume(f"{p}:labels/cells")
    assert cells.name == "cells" and cells.dtype == np.uint32 and len(cells.levels) == 2
    assert cells.labels is True  # listed in the labels group
    assert open_volume(p).labels is None  # the image: nothing said


def test_ome_zarr_translation_squeezed_with_its_axes(tmp_path, vol):
    p = tmp_path / "img.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=3)
    g.create_array("s0", data=vol[None, None], chunks=(1, 1, 1, 8, 8))
    axes = [
        {"name": "t", "type": "time", "unit": "second"},
        {"name": "c", "type": "channel"},
        *({"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"),
    ]
    transforms = [
        {"type": "scale", "scale": [1.0, 1.0, 0.04, 0.008, 0.008]},
        {"type": "translation", "translation": [3.0, 0.0, 0.4, 0.016, -0.008]},
    ]
    g.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {"axes": axes, "datasets": [{"path": "s0", "coordinateTransformations": transforms}]}
        ],
        "image-label": {},
    }
    v = open_volume(p)
    assert v.shape == (5, 24, 32)
    assert v.voxel_size == pytest.approx((40.0, 8.0, 8.0))
    assert v.translate == pytest.approx((400.0, 16.0, -8.0))
    assert v.labels is True


def test_segmentation_store_arrays_say_what_they_hold(tmp_path, phantom_segmentation, write_store):
    store = write_store(phantom_segmentation((2, 40, 40), 5), tmp_path / "out.zarr")
    assert open_volume(f"{store}:boundaries").labels is False
    assert open_volume(f"{store}:fragments").labels is True
    assert open_volume(f"{store}:segmentation").labels is True
    assert open_volume(f"{store}:fragments").translate is None


def test_large_zarr_is_not_loaded(tmp_path):
    p = tmp_path / "big.zarr"
    zarr.create_array(
        str(p), shape=(2000, 20000, 20000), chunks=(1, 512, 512), dtype=np.uint8, zarr_format=3
    )
    t0 = time.perf_counter()
    v = open_volume(p)
    assert time.perf_counter() - t0 < 5
    assert isinstance(v.data, zarr.Array)
    assert not isinstance(v.data, np.ndarray)
    assert v.shape == (2000, 20000, 20000)


# ------------------------------------------------------------------ spec parsing


def test_parse_volume_spec_forms(tmp_path, vol):
    np.savez(tmp_path / "vol.npz", raw=vol)
    with h5py.File(tmp_path / "vol.h5", "w") as f:
        f["volumes/raw"] = vol
    zarr.open_group(str(tmp_path / "vol.zarr"), mode="w").create_array("raw", data=vol)
    d = tmp_path
    assert parse_volume_spec(f"{d}/vol.npz") == (d / "vol.npz", None)
    assert parse_volume_spec(f"{d}/vol.npz:raw") == (d / "vol.npz", "raw")
    assert parse_volume_spec(f"{d}/vol.h5:/volumes/raw") == (d / "vol.h5", "/volumes/raw")
    assert parse_volume_spec(f"{d}/vol.h5/volumes/raw") == (d / "vol.h5", "volumes/raw")
    assert parse_volume_spec(f"{d}/vol.zarr:raw") == (d / "vol.zarr", "raw")
    assert parse_volume_spec(f"{d}/vol.zarr/raw") == (d / "vol.zarr", "raw")
    assert parse_volume_spec(d / "vol.zarr") == (d / "vol.zarr", None)
    assert parse_volume_spec(f"{d}/missing.npz:raw") == (d / "missing.npz", "raw")
    assert parse_volume_spec(f"{d}/vol.h5:/") == (d / "vol.h5", "/")
    assert open_volume(f"{d}/vol.h5:/").name == "raw"  # "/" names no array: the default


def test_path_with_colon_that_exists_wins(tmp_path, vol):
    p = tmp_path / "run:3.npy"
    np.save(p, vol)
    assert parse_volume_spec(str(p)) == (p, None)
    np.testing.assert_array_equal(open_volume(str(p)).data, vol)
    q = tmp_path / "a:b.npz"
    np.savez(q, raw=vol)
    assert parse_volume_spec(f"{q}:raw") == (q, "raw")


# ------------------------------------------------------------------ errors


def test_missing_file(tmp_path):
    with pytest.raises(VolumeError, match="no such file: .*nope.npz"):
        open_volume(tmp_path / "nope.npz")
    with pytest.raises(VolumeError, match="no such file: .*nope.npz"):
        open_volume(f"{tmp_path}/nope.npz:raw")


def test_unknown_format(tmp_path):
    p = tmp_path / "vol.txt"
    p.write_text("hello")
    with pytest.raises(VolumeError, match=r"vol\.txt.*'\.txt'.*\.zarr.*\.npz.*\.tif"):
        open_volume(p)
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(VolumeError, match="not a zarr store"):
        open_volume(tmp_path / "plain_dir")


def test_missing_array_lists_available(tmp_path, vol):
    np.savez(tmp_path / "v.npz", raw=vol, labels=vol)
    with pytest.raises(VolumeError, match=r"v\.npz holds no array 'nope'.*raw, labels"):
        open_volume(f"{tmp_path}/v.npz:nope")
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["a/raw"] = vol
    with pytest.raises(VolumeError, match=r"no array 'b'.*a/raw"):
        open_volume(tmp_path / "v.h5", array="b")
    with pytest.raises(VolumeError, match=r"HDF5 group.*a/raw"):
        open_volume(f"{tmp_path}/v.h5:a")
    g = zarr.open_group(str(tmp_path / "v.zarr"), mode="w")
    g.create_array("em_x", data=vol)
    with pytest.raises(VolumeError, match=r"no array 'raw2'.*em_x"):
        open_volume(f"{tmp_path}/v.zarr:raw2")


def test_several_arrays_none_default(tmp_path, vol):
    np.savez(tmp_path / "v.npz", a=vol, b=vol)
    with pytest.raises(VolumeError, match=r"several arrays.*Available arrays: a, b"):
        open_volume(tmp_path / "v.npz")


def test_conflicting_array_names(tmp_path, vol):
    np.savez(tmp_path / "v.npz", raw=vol, labels=vol)
    with pytest.raises(VolumeError, match="name one"):
        open_volume(f"{tmp_path}/v.npz:raw", array="labels")


def test_not_grayscale_names_shape(tmp_path):
    np.save(tmp_path / "rgb.npy", np.zeros((3, 16, 16, 3), np.uint8))
    with pytest.raises(
        VolumeError, match=r"expected a 2D \(y, x\) or 3D.*\(3, 16, 16, 3\).*channel"
    ):
        open_volume(tmp_path / "rgb.npy")
    assert open_volume(tmp_path / "rgb.npy", grayscale=False).shape == (3, 16, 16, 3)
    np.save(tmp_path / "rgb2.npy", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(VolumeError, match=r"\(64, 64, 3\)"):
        open_volume(tmp_path / "rgb2.npy")
    np.save(tmp_path / "line.npy", np.zeros(10))
    with pytest.raises(VolumeError, match=r"\(10,\)"):
        open_volume(tmp_path / "line.npy")


def test_rgb_tiff_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    with pytest.raises(VolumeError, match="grayscale"):
        open_volume(tmp_path / "rgb.tif")


def test_channel_axis_rejected(tmp_path, vol):
    p = tmp_path / "c.zarr"
    g = zarr.open_group(str(p), mode="w")
    g.create_array("0", data=np.stack([vol[0], vol[1]]))
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space"},
        {"name": "x", "type": "space"},
    ]
    g.attrs["multiscales"] = [{"axes": axes, "datasets": [{"path": "0"}]}]
    with pytest.raises(VolumeError, match=r"got shape \(2, 24, 32\) \(axes c,y,x\)"):
        open_volume(p)


def test_empty_array(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 16, 16), np.uint8))
    with pytest.raises(VolumeError, match=r"empty.*\(0, 16, 16\)"):
        open_volume(tmp_path / "empty.npy")


def test_corrupted_files(tmp_path, vol):
    for name in ("bad.npz", "bad.h5", "bad.tif"):
        (tmp_path / name).write_bytes(b"not really a volume" * 20)
        with pytest.raises(VolumeError, match=rf"{name} looks corrupted or truncated"):
            open_volume(tmp_path / name)
    np.save(tmp_path / "cut.npy", vol)
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeError, match="corrupted or truncated"):
        open_volume(tmp_path / "cut.npy")
    p = tmp_path / "bad.zarr"
    zarr.open_group(str(p), mode="w", zarr_format=3).create_array("raw", data=vol)
    (p / "raw" / "zarr.json").write_text("{ broken json")
    with pytest.raises(VolumeError, match="corrupted or truncated"):
        open_volume(f"{p}:raw")


def test_corrupted_zarr_chunk(tmp_path, vol):
    p = tmp_path / "chunk.zarr"
    zarr.create_array(str(p), shape=vol.shape, dtype=vol.dtype, chunks=vol.shape, zarr_format=2)[
        :
    ] = vol
    (p / "0.0.0").write_bytes(b"garbage")
    with pytest.raises(VolumeError, match="corrupted or truncated"):
        open_volume(p)


def test_labels_read_with_same_function(tmp_path, vol):
    np.save(tmp_path / "seg.npy", vol.astype(np.uint64))
    assert open_volume(tmp_path / "seg.npy").dtype == np.uint64
