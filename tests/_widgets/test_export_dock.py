import numpy as np
import pytest

from napari_connectome.io import open_volume


@pytest.fixture
def viewer_and_dock(make_napari_viewer):
    viewer = make_napari_viewer()
    labels = np.zeros((4, 20, 20), dtype=np.uint32)
    labels[:, :, 10:] = 3
    viewer.add_labels(labels, name="segmentation", scale=(40, 4, 4))
    _, widget = viewer.window.add_plugin_dock_widget("napari-connectome", "Export")
    return viewer, widget


def test_export_writes_the_layer(viewer_and_dock, qtbot, tmp_path):
    viewer, widget = viewer_and_dock
    assert widget.layer.value is viewer.layers["segmentation"]
    widget.dest.value = tmp_path / "seg.ome.zarr"
    widget.controls.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.controls.status.value.startswith("Wrote"), timeout=20000)
    vol = open_volume(tmp_path / "seg.ome.zarr")
    np.testing.assert_array_equal(np.asarray(vol.data), viewer.layers["segmentation"].data)
    assert vol.voxel_size == pytest.approx((40, 4, 4))


def test_existing_destination_is_refused(viewer_and_dock, tmp_path):
    _, widget = viewer_and_dock
    (tmp_path / "seg.tif").write_bytes(b"old")
    widget.dest.value = tmp_path / "seg.tif"
    widget.controls.run_button.clicked.emit()
    assert "overwrite" in widget.controls.status.value
    assert (tmp_path / "seg.tif").read_bytes() == b"old"
    widget.dest.value = tmp_path / "seg.png"
    widget.controls.run_button.clicked.emit()
    assert "unsupported suffix" in widget.controls.status.value
