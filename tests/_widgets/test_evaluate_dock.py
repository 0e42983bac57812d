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
