import json
import os

import h5py
import numpy as np
import pytest

from napari_connectome.io import open_volume
from napari_connectome.io.export import (
    export_format,
    export_labels,
    mode_downsample,
    pyramid_factors,
)

VOXEL = (40.0, 4.0, 4.0)


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    return rng.integers(0, 50, (6, 40, 30)).astype(np.uint32)


@pytest.mark.parametrize("name", ["seg.ome.zarr", "seg.zarr", "seg.tif", "seg.tiff", "seg.h5"])
def test_round_trip(tmp_path, labels, name):
    dest = export_labels(labels, tmp_path / name, voxel_size=VOXEL, block_shape=(4, 16, 16))
    vol = open_volume(dest)
    np.testing.assert_array_equal(np.asarray(vol.data), labels)
    assert vol.voxel_size == pytest.approx(VOXEL)
    assert sorted(os.listdir(tmp_path)) == [name]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint64, np.int32])
def test_tiff_dtypes(tmp_path, labels, dtype):
    data = labels.astype(dtype)
    vol = open_volume(export_labels(data, tmp_path / "a.tif", voxel_size=VOXEL))
    np.testing.assert_array_equal(np.asarray(vol.data), data)
    if np.dtype(dtype).itemsize < 8:
        assert vol.voxel_size == pytest.approx(VOXEL)


def test_h5_attributes(tmp_path, labels):
    export_labels(labels, tmp_path / "a.h5", voxel_size=VOXEL)
    with h5py.File(tmp_path / "a.h5") as f:
        ds = f["labels"]
        assert ds.compression == "gzip" and ds.chunks is not None
        assert tuple(ds.attrs["voxel_size"]) == VOXEL
        assert tuple(ds.attrs["resolution"]) == VOXEL


def test_2d(tmp_path):
    data = np.arange(12, dtype=np.uint16).reshape(3, 4)
    for name in ("a.ome.zarr", "a.tif", "a.h5"):
        vol = open_volume(export_labels(data, tmp_path / name, voxel_size=(5, 5)))
        np.testing.assert_array_equal(np.asarray(vol.data), data)
        assert vol.voxel_size == pytest.approx((5, 5))


def test_mode_downsample_known_example():
    block = np.array(
        [
            [1, 1, 2, 0, 9],
            [3, 1, 0, 2, 9],
            [5, 5, 7, 8, 4],
            [5, 6, 8, 7, 4],
        ]
    )
    out = mode_downsample(block, (2, 2))
    # 1 wins 3:1; 2 ties 0 (label before background); 5 wins; 7/8 tie -> first met; edge pad
    np.testing.assert_array_equal(out, [[1, 2, 9], [5, 7, 4]])
    np.testing.assert_array_equal(
        mode_downsample(np.full((3, 3, 3), 4), (1, 2, 2)).shape, (3, 2, 2)
    )


def test_pyramid_factors_anisotropic_then_isotropic():
    plan = pyramid_factors((300, 2048, 2048), (40, 4, 4))
    assert plan[:3] == [(1, 2, 2)] * 3
    assert plan[3] == (2, 2, 2)
    assert pyramid_factors((300, 600, 600), (8, 8, 8))[0] == (2, 2, 2)
    assert pyramid_factors((10, 200, 200), VOXEL) == []


def test_ome_zarr_levels_and_metadata(tmp_path):
    data = np.zeros((2, 600, 520), np.uint32)
    data[:, :300] = 7
    data[:, 300:, 1::2] = 3  # mode of every 2x2 window is 3 (ties prefer a label)
    dest = export_labels(
        data, tmp_path / "a.ome.zarr", voxel_size=VOXEL, block_shape=(1, 128, 128)
    )
    attrs = json.loads((dest / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert all(a["type"] == "space" and a["unit"] == "nanometer" for a in ms["axes"])
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales == [[40, 4, 4], [40, 8, 8], [40, 16, 16]]
    assert json.loads((dest / ".zgroup").read_text())["zarr_format"] == 2
    arr0 = json.loads((dest / "0" / ".zarray").read_text())
    assert arr0["compressor"]["id"] == "blosc" and arr0["compressor"]["cname"] == "zstd"
    vol = open_volume(dest)
    assert [lv.shape for lv in vol.levels] == [(2, 600, 520), (2, 300, 260), (2, 150, 130)]
    level1 = np.asarray(vol.levels[1])
    assert (level1[:, :150] == 7).all() and (level1[:, 150:] == 3).all()
    assert (np.asarray(vol.levels[2])[:, 75:] == 3).all()


def test_streams_blocks_from_a_callable(tmp_path, labels):
    calls = []

    def read_block(box):
        calls.append(tuple((s.start, s.stop) for s in box))
        return labels[box]

    for name, n in (("a.ome.zarr", 2 * 3 * 2), ("a.h5", 2 * 3 * 2), ("a.tif", 2)):
        calls.clear()
        export_labels(
            read_block,
            tmp_path / name,
            shape=labels.shape,
            dtype=labels.dtype,
            block_shape=(4, 16, 16),
        )
        assert len(calls) == n, name
        full = tuple((0, s) for s in labels.shape)
        assert full not in calls
        np.testing.assert_array_equal(np.asarray(open_volume(tmp_path / name).data), labels)


def test_progress_reaches_one(tmp_path, labels):
    seen = []
    export_labels(labels, tmp_path / "a.zarr", progress=lambda f, m: seen.append(f))
    assert seen and seen[-1] == 1.0


@pytest.mark.parametrize("name", ["a.ome.zarr", "a.tif", "a.h5"])
def test_failing_block_leaves_nothing(tmp_path, labels, name):
    def read_block(box):
        if box[0].start > 0:
            raise RuntimeError("disk on fire")
        return labels[box]

    with pytest.raises(RuntimeError, match="disk on fire"):
        export_labels(
            read_block,
            tmp_path / name,
            shape=labels.shape,
            dtype="uint32",
            block_shape=(2, 40, 30),
        )
    assert os.listdir(tmp_path) == []


def test_failure_keeps_the_old_destination(tmp_path, labels):
    dest = export_labels(labels, tmp_path / "a.h5")

    def broken(box):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        export_labels(broken, dest, shape=labels.shape, dtype="uint32", overwrite=True)
    assert os.listdir(tmp_path) == ["a.h5"]
    np.testing.assert_array_equal(np.asarray(open_volume(dest).data), labels)


def test_overwrite(tmp_path, labels):
    dest = export_labels(labels, tmp_path / "a.ome.zarr")
    with pytest.raises(FileExistsError, match=r"a\.ome\.zarr.*overwrite"):
        export_labels(labels, dest)
    export_labels(labels + 1, dest, overwrite=True)
    np.testing.assert_array_equal(np.asarray(open_volume(dest).data), labels + 1)
    assert os.listdir(tmp_path) == ["a.ome.zarr"]


def test_refuses_to_replace_a_plain_folder(tmp_path, labels):
    folder = tmp_path / "keep.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a zarr store"):
        export_labels(labels, folder, overwrite=True)
    assert (folder / "notes.txt").exists()


def test_unknown_suffix_and_bad_input(tmp_path, labels):
    with pytest.raises(ValueError, match=r"\.ome\.zarr.*\.tif.*\.h5"):
        export_labels(labels, tmp_path / "a.png")
    with pytest.raises(ValueError, match="unsupported"):
        export_format("labels.n5")
    with pytest.raises(ValueError, match="integers"):
        export_labels(labels.astype(np.float32), tmp_path / "a.h5")
    with pytest.raises(ValueError, match="voxel_size"):
        export_labels(labels, tmp_path / "a.h5", voxel_size=(1, 2))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["a.ome.zarr", "a.h5"])
def test_reads_follow_the_source_chunks(tmp_path, name):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 9, (6, 300, 280)).astype(np.uint32)
    calls = []

    def read_block(box):
        calls.append(tuple((s.start, s.stop) for s in box))
        return labels[box]

    source_chunks, block = (1, 128, 128), (4, 64, 64)
    export_labels(
        read_block,
        tmp_path / name,
        shape=labels.shape,
        dtype=labels.dtype,
        voxel_size=VOXEL,
        block_shape=block,
        source_chunks=source_chunks,
    )
    for box in calls:  # whole source chunks (or the volume's end), at most one block
        for (a, b), c, n in zip(box, source_chunks, labels.shape, strict=True):
            assert a % c == 0 and (b % c == 0 or b == n)
        assert np.prod([b - a for a, b in box]) <= np.prod(block)
    plain = export_labels(
        labels, tmp_path / ("plain" + name[1:]), voxel_size=VOXEL, block_shape=block
    )
    if name.endswith("zarr"):
        attrs = json.loads((tmp_path / name / ".zattrs").read_text())
        assert attrs["multiscales"][0]["name"] == name
    ours, theirs = open_volume(tmp_path / name), open_volume(plain)
    assert len(ours.levels) == len(theirs.levels) == (2 if name.endswith("zarr") else 1)
    for a, b in zip(ours.levels, theirs.levels, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
