import pytest

from napari_connectome._widgets.phantom_dock import parse_section_list


def test_parse_section_list():
    assert parse_section_list("") == ()
    assert parse_section_list("3, 7 12") == (3, 7, 12)
    with pytest.raises(ValueError, match="whole numbers"):
        parse_section_list("3, x")


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-connectome", "Phantom")
    widget.shape.value = (6, 64, 64)
    widget.voxel_size.value = (40.0, 8.0, 8.0)
    return viewer, widget


def test_make_phantom_adds_then_replaces_layers(dock, qtbot):
    viewer, widget = dock
    widget.controls.run_button.clicked.emit()
    qtbot.waitUntil(lambda: len(viewer.layers) == 3, timeout=30000)
    assert viewer.layers["phantom EM"].data.shape == (6, 64, 64)
    assert tuple(viewer.layers["phantom EM"].scale) == (40.0, 8.0, 8.0)
    first = viewer.layers["phantom EM"].data.copy()
    widget.seed.value = 1
    widget.controls.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.controls.run_button.enabled, timeout=30000)
    assert len(viewer.layers) == 3
    assert (viewer.layers["phantom EM"].data != first).any()


def test_bad_sections_show_an_error(dock):
    viewer, widget = dock
    widget.missing_sections.value = "two"
    widget.controls.run_button.clicked.emit()
    assert "whole numbers" in widget.controls.status.value
    assert len(viewer.layers) == 0


def test_out_of_range_section_is_reported(dock, qtbot):
    viewer, widget = dock
    widget.missing_sections.value = "99"
    widget.controls.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.controls.status.value.startswith("Error"), timeout=30000)
    assert "99" in widget.controls.status.value
    assert len(viewer.layers) == 0


def test_cancel_drops_the_result(dock, qtbot):
    viewer, widget = dock
    widget.controls.run_button.clicked.emit()
    widget.controls.cancel_button.clicked.emit()
    assert widget.controls.status.value == "Cancelled."
    assert widget.controls.run_button.enabled
    qtbot.wait(3000)
    assert len(viewer.layers) == 0
