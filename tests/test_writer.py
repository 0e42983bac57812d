import numpy as np
import pytest

from napari_connectome._writer import write_labels
from napari_connectome.io import open_volume


@pytest.fixture
def labels():
    return np.random.default_rng(1).integers(0, 9, (3, 20, 24)).astype(np.uint32)


@pytest.mark.parametrize("name", ["a.ome.zarr", "a.zarr", "a.tif", "a.tiff", "a.h5"])
def test_write_labels_scale(tmp_path, labels, name):
    path = str(tmp_path / name)
    assert write_labels(path, labels, {"scale": (40.0, 4.0, 4.0), "name": "seg"}) == [path]
    vol = open_volume(path)
    np.testing.assert_array_equal(np.asarray(vol.data), labels)
    assert vol.voxel_size == pytest.approx((40, 4, 4))


def test_write_labels_metadata_voxel_size_and_replace(tmp_path, labels):
    path = str(tmp_path / "a.h5")
    meta = {"scale": (1.0, 1.0, 1.0), "metadata": {"voxel_size_nm": [30, 6, 6]}}
    write_labels(path, labels, meta)
    write_labels(path, [labels + 1, labels[:, ::2, ::2]], meta)  # multiscale: level 0
    vol = open_volume(path)
    np.testing.assert_array_equal(np.asarray(vol.data), labels + 1)
    assert vol.voxel_size == pytest.approx((30, 6, 6))


def test_write_labels_unknown_voxel_size(tmp_path, labels):
    path = str(tmp_path / "a.ome.zarr")
    write_labels(path, labels, {"scale": (1, 1, 1)})
    assert open_volume(path).voxel_size is None


def test_manifest_declares_the_writer():
    from npe2 import PluginManifest

    from napari_connectome import __name__ as package

    manifest = PluginManifest.from_distribution(package.replace("_", "-"))
    (writer,) = manifest.contributions.writers
    assert writer.command == "napari-connectome.write_labels"
    assert writer.layer_types == ["labels"]
    assert ".ome.zarr" in writer.filename_extensions
