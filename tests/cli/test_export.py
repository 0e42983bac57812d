import os

import numpy as np
import pytest

from napari_connectome.cli import main
from napari_connectome.io import open_volume
from napari_connectome.io.journal import journal_path, open_proofreading

VOXEL = (40.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation((4, 64, 64), seed=1)


@pytest.fixture
def store(tmp_path, result, write_store):
    return write_store(result, tmp_path / "seg.zarr", VOXEL)


def corrected(store):
    session = open_proofreading(store)
    session.close()
    return session.state


@pytest.mark.parametrize("name", ["out.ome.zarr", "out.tif", "out.h5"])
def test_export_after_merge(store, tmp_path, capsys, name):
    segs = corrected(store).segments.tolist()
    a, b = segs[0], segs[1]
    assert main(["proofread", str(store), "--merge", str(a), str(b)]) == 0
    state = corrected(store)
    journal_size = journal_path(store).stat().st_size
    dest = tmp_path / name
    assert main(["export", str(store), "--labels", str(dest)]) == 0
    out = capsys.readouterr()
    assert str(dest) in out.out and "1 proofreading edit applied" in out.out
    assert "%" in out.err
    vol = open_volume(dest)
    data = np.asarray(vol.data)
    np.testing.assert_array_equal(data, state.labels_in(None))
    assert vol.voxel_size == pytest.approx(VOXEL)
    stored = np.asarray(open_volume(f"{store}:segmentation").data)
    # a and b are one segment now: the export has one id fewer than the stored labels
    assert len(np.unique(data)) == len(np.unique(stored)) - 1
    assert journal_path(store).stat().st_size == journal_size  # store untouched


def test_export_without_journal(store, tmp_path):
    dest = tmp_path / "out.h5"
    assert main(["export", str(store), "--labels", str(dest)]) == 0
    assert not journal_path(store).exists()
    data = np.asarray(open_volume(dest).data)
    assert len(np.unique(data)) == len(
        np.unique(np.asarray(open_volume(f"{store}:segmentation").data))
    )


def test_bad_input(store, tmp_path, capsys):
    dest = tmp_path / "out.tif"
    assert main(["export", str(tmp_path / "missing.zarr"), "--labels", str(dest)]) == 2
    assert "no such segmentation store" in capsys.readouterr().err
    plain = tmp_path / "plain.zarr"
    plain.mkdir()
    (plain / ".zgroup").write_text('{"zarr_format": 2}')
    assert main(["export", str(plain), "--labels", str(dest)]) == 2
    assert "not a napari-connectome segmentation store" in capsys.readouterr().err
    assert main(["export", str(store), "--labels", str(tmp_path / "out.png")]) == 2
    assert "unsupported suffix" in capsys.readouterr().err
    dest.write_bytes(b"old")
    assert main(["export", str(store), "--labels", str(dest)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert dest.read_bytes() == b"old"
    assert main(["export", str(store), "--labels", str(dest), "--overwrite"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["out.tif", "plain.zarr", "seg.zarr"]
