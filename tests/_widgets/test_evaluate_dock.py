import numpy as np
import pytest


@pytest.fixture
def viewer_and_dock(make_napari_viewer):
    viewer = make_napari_viewer()
    truth = np.zeros((4, 20, 20), dtype=np.uint32)
    truth[:, :, :10], truth[:, :, 10:] = 1, 2
    seg = truth.copy()
    seg[:, :10, :] += 10
    viewer.add_labels(seg, name="segmentation")
    viewer.add_labels(truth, name="neurons (truth)")
    _, widget = viewer.window.add_plugin_dock_widget("napari-connectome", "Evaluate")
    return viewer, widget


def test_defaults_pick_truth_and_segmentation(viewer_and_dock):
    viewer, widget = viewer_and_dock
    assert widget.ground_truth.value is viewer.layers["neurons (truth)"]
    assert widget.segmentation.value is viewer.layers["segmentation"]


def test_evaluate_shows_scores(viewer_and_dock, qtbot):
    _, widget = viewer_and_dock
    widget.controls.run_button.clicked.emit()
    qtbot.waitUntil(lambda: "VOI split" in widget.result.value, timeout=20000)
    assert "1.0000 bits" in widget.result.value


def test_new_layers_are_offered(viewer_and_dock):
    viewer, widget = viewer_and_dock
    viewer.add_labels(np.zeros((4, 20, 20), np.uint8), name="another")
    assert viewer.layers["another"] in widget.segmentation.choices


def test_shape_mismatch_is_reported(viewer_and_dock):
    viewer, widget = viewer_and_dock
    widget.segmentation.value = viewer.add_labels(np.ones((4, 20, 21), np.uint32), name="x")
    widget.controls.run_button.clicked.emit()
    assert "same shape" in widget.controls.status.value
    assert widget.result.value == ""


def test_empty_truth_is_reported(viewer_and_dock, qtbot):
    viewer, widget = viewer_and_dock
    widget.ground_truth.value = viewer.add_labels(np.zeros((4, 20, 20), np.uint32), name="e")
    widget.controls.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.controls.status.value.startswith("Error"), timeout=20000)
    assert "ground truth" in widget.controls.status.value


def test_a_segmentation_added_later_is_picked(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_labels(np.ones((4, 20, 20), np.uint32), name="neurons (truth)")
    _, widget = viewer.window.add_plugin_dock_widget("napari-connectome", "Evaluate")
    assert widget.segmentation.value is None
    layer = viewer.add_labels(np.ones((4, 20, 20), np.uint32), name="my segmentation")
    assert widget.segmentation.value is layer
    assert widget.ground_truth.value is viewer.layers["neurons (truth)"]


def _run(widget, qtbot):
    widget.controls.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.controls.worker is None, timeout=20000)
    return widget.controls.status.value


def test_scopes_score_what_they_name(viewer_and_dock, qtbot):
    viewer, widget = viewer_and_dock
    assert widget.scope.value == "region in view"
    viewer.dims.set_point(0, 2)
    assert _run(widget, qtbot) == "Done: 20x20 px of section 2."  # all of it is in view
    assert "400 voxels scored" in widget.result.value
    widget.scope.value = "whole volume"
    assert _run(widget, qtbot) == "Done: all 4x20x20 px."
    assert "1,600 voxels scored" in widget.result.value
    # zoomed into the left half of the rows: only the truth's label 1, split in two
    widget.scope.value = "region in view"
    viewer.camera.center, viewer.camera.zoom = (2, 9.5, 4.5), max(viewer.canvas.size) / 9
    assert _run(widget, qtbot).startswith("Done")
    region = widget.region
    assert region.plane and region.stop[2] <= 10 and region.start[1] < 10 <= region.stop[1]
    assert "VOI merge  0.0000" in widget.result.value


def _write_labels(path, labels, chunks=(1, 8, 8)):
    """Write ``labels`` as a two-level NGFF 0.4 label image (``image-label``)."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    for level in range(2):
        f = 2**level
        group.create_array(str(level), data=labels[:, ::f, ::f], chunks=chunks)
        scale = {"type": "scale", "scale": [40.0, 4.0 * f, 4.0 * f]}
        datasets.append({"path": str(level), "coordinateTransformations": [scale]})
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    group.attrs["image-label"] = {"version": "0.4"}
    return path


def test_multiscale_labels_read_only_the_region_in_view(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    from zarr.storage import LocalStore

    truth = np.zeros((3, 64, 64), dtype=np.uint32)
    truth[:, :, :32], truth[:, :, 32:] = 1, 2
    seg = truth + 10 * (np.arange(64)[None, :, None] >= 32)
    viewer = make_napari_viewer()
    for name, data in (("seg", seg), ("truth", truth)):
        viewer.open(
            str(_write_labels(tmp_path / f"{name}.ome.zarr", data)), plugin="napari-connectome"
        )
    seg_layer, truth_layer = viewer.layers["seg"], viewer.layers["truth"]
    assert seg_layer.multiscale and truth_layer.multiscale
    _, widget = viewer.window.add_plugin_dock_widget("napari-connectome", "Evaluate")
    widget.segmentation.value, widget.ground_truth.value = seg_layer, truth_layer
    viewer.dims.set_point(0, 40)
    viewer.camera.center, viewer.camera.zoom = (40, 126, 126), max(viewer.canvas.size) / 40
    reads, original_get = [], LocalStore.get

    async def counting_get(self, key, *args, **kwargs):
        reads.append(key)
        return await original_get(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", counting_get)
    assert _run(widget, qtbot).startswith("Done")
    monkeypatch.undo()
    region = widget.region
    assert region.plane and region.start[0] == 1 and max(region.shape[1:]) <= 12
    rows = range(region.start[1] // 8, (region.stop[1] - 1) // 8 + 1)
    cols = range(region.start[2] // 8, (region.stop[2] - 1) // 8 + 1)
    wanted = {f"0/1.{r}.{c}" for r in rows for c in cols}
    assert len(wanted) <= 4
    assert set(reads) == wanted and len(reads) == 2 * len(wanted)  # both layers, level 0 only
    # the view straddles both truth labels and the split between the segmentation's halves
    assert "VOI        0.0000" not in widget.result.value


def test_scope_beyond_the_memory_limit_is_refused(viewer_and_dock, monkeypatch):
    from napari_connectome._widgets import _scope

    monkeypatch.setattr(_scope, "MAX_DOCK_VOXELS", 100)
    _, widget = viewer_and_dock
    widget.scope.value = "whole volume"
    widget.controls.run_button.clicked.emit()
    assert "more than a dock reads" in widget.controls.status.value
    assert widget.controls.worker is None and widget.result.value == ""
