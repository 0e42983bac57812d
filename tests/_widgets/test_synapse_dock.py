"""The Synapses dock in a real napari viewer, on small scenes (CPU-cheap stand-in network)."""

import numpy as np
import pytest
import torch
from qtpy.QtCore import Qt
from torch import nn

from napari_connectome._widgets._scope import CURRENT_SLICE, WHOLE_VOLUME
from napari_connectome.core.synapses import DETECTION_DEFAULTS
from napari_connectome.models.synapse_inference import SYNAPSE_OUTPUT
from napari_connectome.models.unet import default_config

TIMEOUT = 60000  # ms; the machine may be busy
VS = (40.0, 4.0, 4.0)
CONFIG = default_config(
    out_channels=2,
    output=SYNAPSE_OUTPUT,
    base_channels=4,
    depth=2,
    normalization={"method": "meanstd"},
)


class DarkAndBright(nn.Module):
    """A stand-in synapse network: dark pixels are synapse, bright ones presynaptic."""

    def forward(self, x):
        return torch.cat([40 * (0.25 - x), 40 * (x - 0.7)], dim=1)


MODEL = (DarkAndBright(), CONFIG)


def scene():
    """Two synapses; segment 1 (bright, presynaptic) faces segments 2 and 3."""
    raw = np.full((4, 128, 96), 128, np.uint8)
    seg = np.zeros(raw.shape, np.uint32)
    seg[:, :, :48] = 1
    seg[:, :64, 48:] = 2
    seg[:, 64:, 48:] = 3
    raw[:, :, 20:44] = 255  # presynaptic side of segment 1
    raw[1:3, 8:32, 43:53] = 0  # synapse onto 2 (2 x 24 x 10 voxels, 307 200 nm^3)
    raw[1:3, 93:117, 43:53] = 0  # synapse onto 3
    return raw, seg


def make_dock(viewer, raw, seg=None, scope=WHOLE_VOLUME, translate=(0.0, 0.0, 0.0)):
    viewer.add_image(raw, name="EM", scale=VS, translate=translate)
    if seg is not None:
        viewer.add_labels(seg, name="EM segmentation", scale=VS, translate=translate)
    _, dock = viewer.window.add_plugin_dock_widget("napari-connectome", "Synapses")
    dock.custom_model = MODEL
    dock.device.value = "cpu"
    dock.scope.value = scope
    dock.probability.value, dock.min_size.value = 0.5, 2e5  # not the bundled model's defaults
    return dock


def run(dock, qtbot):
    dock.run()
    qtbot.waitUntil(lambda: dock.controls.worker is None, timeout=TIMEOUT)
    return dock.controls.status.value


def edges_of(dock):
    return {(int(a), int(b)): int(c) for a, b, c in dock.edges}


def test_detects_shows_layers_table_and_matrix(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    dock = make_dock(viewer, *scene(), translate=(0.0, 100.0, 200.0))
    raw_shape = scene()[0].shape
    assert dock.voxel_size.value == "40, 4, 4"
    status = run(dock, qtbot)
    assert status.startswith("Done: 2 synapses"), status
    points = viewer.layers["EM synapses"]
    assert points.data.shape == (2, 3)
    assert tuple(points.scale) == VS and tuple(points.translate) == (0.0, 100.0, 200.0)
    centres = sorted(map(tuple, np.round(points.data).astype(int)))
    assert 15 < centres[0][1] < 25 and 100 < centres[1][1] < 110  # y near 20 and 105 px
    assert all(1 <= c[0] <= 2 and 44 <= c[2] <= 52 for c in centres)
    conf = points.features["confidence"].to_numpy()
    assert np.all((conf > 0.5) & (conf <= 1.0))
    arrows = viewer.layers["EM synapse partners"].data
    assert arrows.shape == (2, 2, 3)
    assert np.all(arrows[:, 0, 2] < 48) and np.all(arrows[:, 1, 2] > 0)  # from 1 towards x >= 48
    assert edges_of(dock) == {(1, 2): 1, (1, 3): 1}
    assert dock.table.rowCount() == 2
    pres = {dock.table.text(r, 4) for r in range(2)}
    posts = {dock.table.text(r, 5) for r in range(2)}
    assert pres == {"1"} and posts == {"2", "3"}
    assert dock.matrix.neurons == [1, 2, 3]
    assert dock.matrix.counts.tolist() == [[0, 1, 1], [0, 0, 0], [0, 0, 0]]
    dock.neurons.value = "3, 1"
    assert dock.matrix.counts.tolist() == [[0, 0], [1, 0]]
    dock.table.selectRow(0)
    pair = [int(dock.table.text(0, 4)), int(dock.table.text(0, 5))]
    assert dock.neurons_from_selection() == pair and pair[0] == 1
    assert dock.neurons.value == f"1, {pair[1]}"
    assert dock.matrix.counts.tolist() == [[0, 1], [0, 0]]
    dock.neurons.value = "3, x"
    assert "segment ids" in dock.controls.status.value
    dock.neurons.value = "999, 1"  # a neuron without any connection shown is named
    assert "999" in dock.controls.status.value and dock.matrix.neurons == [999, 1]

    # the shown rows and connectome as CSV, positions in nm from the image's first voxel
    pd = pytest.importorskip("pandas")
    synapses_csv, edges_csv = dock.save_csv(tmp_path / "em.csv")
    table = pd.read_csv(synapses_csv)
    assert list(table.columns) == [*"id z y x pre post confidence".split(), "partner_confidence"]
    assert sorted(table["post"]) == [2, 3] and set(table["pre"]) == {1}
    # "confidence" is the detection confidence the dock shows and filters on
    np.testing.assert_allclose(sorted(table["confidence"]), sorted(conf), atol=1e-4)
    assert table["y"].min() == pytest.approx(points.data[:, 1].min() * VS[1], abs=0.1)
    edges = pd.read_csv(edges_csv)
    assert edges.to_numpy().tolist() == [[1, 2, 1], [1, 3, 1]]

    # a re-run replaces the layers instead of piling them up
    run(dock, qtbot)
    names = [layer.name for layer in viewer.layers]
    assert names.count("EM synapses") == 1 and names.count("EM synapse partners") == 1
    # the objects, every section they span, under the points, on the image's grid
    objects = viewer.layers["EM synapse objects"]
    assert names.count("EM synapse objects") == 1
    assert names.index("EM synapse objects") < names.index("EM synapses")
    assert objects.data.shape == raw_shape and set(np.unique(objects.data)) == {0, 1, 2}
    assert tuple(objects.translate) == (0.0, 100.0, 200.0) and tuple(objects.scale) == VS
    assert set(np.flatnonzero(np.any(objects.data == 1, axis=(1, 2)))) == {1, 2}  # 2 sections


def test_threshold_filters_everything(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    dock = make_dock(viewer, *scene())
    run(dock, qtbot)
    conf = np.sort(dock.result.detections.confidence)
    dock.threshold.value = float(np.round((conf[0] + conf[1]) / 2, 2)) if conf[1] > conf[0] else 1
    kept = int((dock.result.detections.confidence >= dock.threshold.value).sum())
    assert len(viewer.layers["EM synapses"].data) == kept
    assert len(viewer.layers["EM synapse partners"].data) == kept
    assert dock.table.rowCount() == kept == sum(edges_of(dock).values())
    dock.threshold.value = 1.0
    assert len(viewer.layers["EM synapses"].data) == 0
    hidden = viewer.layers["EM synapse objects"].colormap.map(np.array([1, 2]))
    assert np.all(hidden[:, 3] == 0)  # the objects under the threshold are transparent
    assert dock.table.rowCount() == 0 and edges_of(dock) == {}
    assert dock.matrix.rowCount() == 0
    dock.threshold.value = 0.0
    assert dock.table.rowCount() == 2
    shown = viewer.layers["EM synapse objects"].colormap.map(np.array([1, 2]))
    assert np.all(shown[:, 3] > 0)


def test_sorting_and_clicking_a_row_jumps_there(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    dock = make_dock(viewer, *scene(), translate=(0.0, 100.0, 200.0))
    run(dock, qtbot)
    dock.table.sortByColumn(2, Qt.SortOrder.AscendingOrder)  # by y
    ys = [float(dock.table.text(r, 2)) for r in range(2)]
    assert ys == sorted(ys)
    dock.table.sortByColumn(2, Qt.SortOrder.DescendingOrder)
    ys = [float(dock.table.text(r, 2)) for r in range(2)]
    assert ys == sorted(ys, reverse=True)
    dock.table.clicked.emit(dock.table.proxy.index(0, 3))  # the lowest synapse (largest y)
    index = dock.table.row_index(0)
    pixel = dock._pixels[int(dock.rows["id"][index]) - 1]
    world = np.array([0.0, 100.0, 200.0]) + pixel * np.array(VS)
    assert viewer.dims.point[0] == pytest.approx(world[0], abs=VS[0] / 2 + 1e-6)
    assert viewer.camera.center[-2:] == pytest.approx(tuple(world[1:]), abs=1e-3)
    assert world[1] > 100 + 60 * 4  # the lower synapse


def test_bad_input_gives_clear_messages(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    viewer = make_napari_viewer()
    raw, seg = scene()
    dock = make_dock(viewer, raw)
    assert "no segmentation layer" in run(dock, qtbot)
    viewer.add_labels(seg[:, :64], name="other")
    dock.segmentation.value = viewer.layers["other"]
    viewer.layers["other"].scale = VS
    status = run(dock, qtbot)
    assert "has shape (4, 64, 96) but the image 'EM' has shape (4, 128, 96)" in status
    viewer.layers["other"].scale = (40.0, 8.0, 8.0)
    assert "not on the pixel grid" in run(dock, qtbot)
    dock.model.value = "file"
    dock.custom_model = None
    viewer.add_labels(seg, name="seg", scale=VS)
    dock.segmentation.value = viewer.layers["seg"]
    assert "pick a synapse model file" in run(dock, qtbot)
    import napari_connectome.models.synapse_inference as inference

    monkeypatch.setattr(inference, "bundled_synapse_model_path", lambda: tmp_path / "none")
    dock.model.value = "bundled"
    assert "bundled synapse model is not installed" in run(dock, qtbot)
    assert dock.result is None and "EM synapses" not in viewer.layers


def test_a_segmentation_without_neurons_is_pointed_out(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    raw, seg = scene()
    dock = make_dock(viewer, raw, np.zeros_like(seg))
    status = run(dock, qtbot)
    assert status.startswith("Done: 2 synapses") and "No connections" in status
    assert not len(dock.edges)


def test_no_synapses_found(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    raw, seg = scene()
    raw[raw == 0] = 128  # no dark cleft: nothing to find
    dock = make_dock(viewer, raw, seg)
    status = run(dock, qtbot)
    assert "no synapses found" in status and "lower the threshold" in status
    assert len(viewer.layers["EM synapses"].data) == 0
    assert dock.table.rowCount() == 0 and dock.matrix.rowCount() == 0


def test_peak_threshold_reaches_the_detection(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    dock = make_dock(viewer, *scene())
    # the bundled model's default
    assert dock.peak_probability.value == pytest.approx(DETECTION_DEFAULTS["peak_threshold"])
    dock.peak_probability.value = 0.85
    assert run(dock, qtbot).startswith("Done: 2 synapses")
    assert dock.result.settings["peak_threshold"] == pytest.approx(0.85)
    dock.peak_probability.value = 1.0  # no voxel is that sure: nothing is kept
    assert "no synapses found" in run(dock, qtbot)


def test_a_cropped_segmentation_limits_the_run(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    raw, seg = scene()
    dock = make_dock(viewer, raw)
    crop = seg[:, 64:].copy()  # covers only the synapse onto 3
    viewer.add_labels(crop, name="crop", scale=VS, translate=(0.0, 64 * VS[1], 0.0))
    dock.segmentation.value = viewer.layers["crop"]
    assert run(dock, qtbot).startswith("Done: 1 synapse in")
    assert edges_of(dock) == {(1, 3): 1}
    assert viewer.layers["EM synapses"].data[0, 1] > 64  # image pixels, not crop pixels


def test_one_section_scope(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    dock = make_dock(viewer, *scene(), scope=CURRENT_SLICE)
    viewer.dims.set_point(0, 2 * VS[0])
    dock.min_size.value = 1e5  # one section of a synapse counts as 40 nm thick: 153 600 nm^3
    assert run(dock, qtbot).startswith("Done: 2 synapses")
    assert np.all(viewer.layers["EM synapses"].data[:, 0] == 2)
    objects = viewer.layers["EM synapse objects"]  # the one section, in its place
    assert objects.data.shape == (1, 128, 96) and objects.translate[0] == 2 * VS[0]
    assert edges_of(dock) == {(1, 2): 1, (1, 3): 1}


def test_partners_follow_a_new_segmentation_without_a_model_run(
    make_napari_viewer, qtbot, monkeypatch
):
    viewer = make_napari_viewer()
    raw, seg = scene()
    dock = make_dock(viewer, raw, seg)
    run(dock, qtbot)
    import napari_connectome.synapse_detection as detection

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran again")

    monkeypatch.setattr(detection, "predict_synapses", no_model)
    merged = seg.copy()
    merged[merged == 3] = 2  # what the Segment dock's threshold slider does
    viewer.layers["EM segmentation"].data = merged
    assert edges_of(dock) == {(1, 2): 2}
    assert dock.table.rowCount() == 2
    assert dock.matrix.counts.tolist() == [[0, 2], [0, 0]]


def test_phantom_runs_and_partners_are_its_neurons(make_napari_viewer, qtbot):
    from napari_connectome.synthetic import make_phantom

    phantom = make_phantom((4, 96, 96), VS, seed=3)
    viewer = make_napari_viewer()
    dock = make_dock(viewer, phantom.raw, phantom.neurons.astype(np.uint32))
    status = run(dock, qtbot)
    assert status.startswith(("Done", "Error: no synapses found")), status
    points = viewer.layers["EM synapses"].data
    assert np.all((points >= -0.5) & (points <= np.array(phantom.raw.shape) - 0.5))
    ids = set(np.unique(phantom.neurons).tolist())
    partners = {int(v) for v in dock.rows["pre"]} | {int(v) for v in dock.rows["post"]}
    assert partners <= ids | {0}


# --- following a proofreading session ----------------------------------------------------


@pytest.fixture
def proofread_scene(tmp_path):
    """The scene's three segments as a stored segmentation state."""
    from napari_connectome._widgets._proofread_store import write_session_store
    from napari_connectome.segmentation import segment_boundaries_state

    raw, seg = scene()
    boundaries = np.zeros(seg.shape, np.float32)
    boundaries[:, :, 47:49] = 1.0
    boundaries[:, 63:65, 48:] = 1.0
    result = segment_boundaries_state(boundaries, VS)
    display = {"name": "EM", "scale": list(VS), "translate": [0.0, 0.0, 0.0], "lift": False}
    store = write_session_store(result, tmp_path / "em.zarr", 0.5, display)
    return raw, store


def test_partners_follow_merges_splits_undo_and_redo(
    make_napari_viewer, qtbot, proofread_scene, monkeypatch
):
    raw, store = proofread_scene
    viewer = make_napari_viewer()
    viewer.add_image(raw, name="EM", scale=VS)
    _, proofread = viewer.window.add_plugin_dock_widget("napari-connectome", "Proofread")
    proofread.open_store(store)
    qtbot.waitUntil(lambda: proofread.controls.worker is None, timeout=TIMEOUT)
    layer = proofread.layer
    state = proofread.controller.state
    left, top, bottom = (state.segment_at(p) for p in ((2, 60, 10), (2, 20, 80), (2, 110, 80)))
    assert len({left, top, bottom}) == 3 and 0 not in (left, top, bottom)

    _, dock = viewer.window.add_plugin_dock_widget("napari-connectome", "Synapses")
    dock.custom_model, dock.device.value, dock.scope.value = MODEL, "cpu", WHOLE_VOLUME
    dock.probability.value, dock.min_size.value = 0.5, 2e5
    dock.image.value, dock.segmentation.value = viewer.layers["EM"], layer
    status = run(dock, qtbot)
    assert "follow the proofreading session" in status, status
    assert edges_of(dock) == {(left, top): 1, (left, bottom): 1}
    import napari_connectome.synapse_detection as detection

    monkeypatch.setattr(detection, "predict_synapses", lambda *a, **k: 1 / 0)

    proofread.mode.value = "merge"
    proofread.click((2, 20, 80))
    proofread.click((2, 110, 80))
    kept = state.segment_at((2, 20, 80))
    assert state.segment_at((2, 110, 80)) == kept
    assert edges_of(dock) == {(left, kept): 2}
    assert dock.matrix.counts.sum() == 2
    assert sorted(map(int, dock.rows["post"])) == [kept, kept]
    arrows = viewer.layers["EM synapse partners"]
    qtbot.waitUntil(lambda: not dock._arrows_due, timeout=TIMEOUT)  # arrows follow the table
    assert len(arrows.data) == 2

    proofread.run_action(lambda c: c.undo())
    assert edges_of(dock) == {(left, top): 1, (left, bottom): 1}
    proofread.run_action(lambda c: c.redo())
    assert edges_of(dock) == {(left, kept): 2}

    # a voxel split of the merged segment: seeds in its top and bottom halves
    proofread.mode.value = "split"
    proofread.click((2, 20, 80))
    proofread.click((2, 110, 80), shift=True)
    outcome = proofread.run_action(lambda c: c.commit_split())
    assert not outcome.error, outcome.message
    a, b = state.segment_at((2, 20, 80)), state.segment_at((2, 110, 80))
    assert a != b
    assert edges_of(dock) == {(left, a): 1, (left, b): 1}
    assert dock.link is not None and dock.link.error is None

    # reopening the session (its journal replayed) on the same layer: the link follows it
    proofread.open_store(store)
    qtbot.waitUntil(lambda: proofread.controls.worker is None, timeout=TIMEOUT)
    assert dock.link.history is proofread.controller.history
    assert edges_of(dock) == {(left, a): 1, (left, b): 1}
    proofread.run_action(lambda c: c.undo())  # the split
    assert edges_of(dock) == {(left, kept): 2}


def test_choosing_another_segmentation_after_the_run_reads_and_follows_it(
    make_napari_viewer, qtbot, proofread_scene, monkeypatch
):
    """Segment, detect, then proofread on a new layer: the partners follow that layer."""
    raw, store = proofread_scene
    _, seg = scene()
    viewer = make_napari_viewer()
    dock = make_dock(viewer, raw, seg)
    run(dock, qtbot)
    assert edges_of(dock) == {(1, 2): 1, (1, 3): 1}
    _, proofread = viewer.window.add_plugin_dock_widget("napari-connectome", "Proofread")
    proofread.open_store(store)  # a new "EM proofread" layer with its own segment ids
    qtbot.waitUntil(lambda: proofread.controls.worker is None, timeout=TIMEOUT)
    import napari_connectome.synapse_detection as detection

    monkeypatch.setattr(detection, "predict_synapses", lambda *a, **k: 1 / 0)
    viewer.add_labels(seg[:, :64], name="other", scale=VS)  # not this image's segmentation
    dock.segmentation.value = viewer.layers["other"]
    assert "still from 'EM segmentation'" in dock.controls.status.value
    assert edges_of(dock) == {(1, 2): 1, (1, 3): 1}
    assert dock.segmentation.value is viewer.layers["EM segmentation"]  # the box follows
    # the dock's own synapse objects are never offered as a segmentation
    choices = [layer.name for layer in dock.segmentation.choices if layer is not None]
    assert "EM synapse objects" not in choices and "EM segmentation" in choices

    dock.segmentation.value = proofread.layer
    assert "following its proofreading session" in dock.controls.status.value
    state = proofread.controller.state
    left, top, bottom = (state.segment_at(p) for p in ((2, 60, 10), (2, 20, 80), (2, 110, 80)))
    assert edges_of(dock) == {(left, top): 1, (left, bottom): 1}
    proofread.mode.value = "merge"
    proofread.click((2, 20, 80))
    proofread.click((2, 110, 80))
    assert edges_of(dock) == {(left, state.segment_at((2, 20, 80))): 2}
    merged = edges_of(dock)
    # removing a layer moves the box, but the partners stay until the user chooses
    viewer.layers.remove(viewer.layers["EM segmentation"])
    viewer.layers.remove(viewer.layers["other"])
    assert edges_of(dock) == merged
    viewer.layers.remove(proofread.layer)
    assert "was removed" in dock.controls.status.value and edges_of(dock) == merged


def test_cancel_drops_the_run(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    dock = make_dock(viewer, *scene())
    dock.run()
    assert dock.controls.cancel_button.enabled and not dock.controls.run_button.enabled
    dock.controls.cancel()
    assert dock.controls.status.value == "Cancelled."
    qtbot.wait(300)
    assert dock.result is None and "EM synapses" not in viewer.layers
    assert dock.controls.run_button.enabled


def test_region_in_view_and_a_2d_image(make_napari_viewer, qtbot):
    from napari_connectome._widgets._scope import REGION_IN_VIEW

    raw, seg = scene()
    viewer = make_napari_viewer()
    viewer.add_image(raw[1], name="EM", scale=VS[1:])
    viewer.add_labels(seg[1], name="seg", scale=VS[1:])
    _, dock = viewer.window.add_plugin_dock_widget("napari-connectome", "Synapses")
    dock.custom_model, dock.device.value, dock.scope.value = MODEL, "cpu", REGION_IN_VIEW
    # a 2D image counts as one 50 nm section: each synapse, about 24 x 10 px of
    # 4 x 4 nm, holds under 192 000 nm^3: under 2e5 and over 1e5
    dock.probability.value, dock.min_size.value = 0.5, 2e5
    viewer.reset_view()
    assert "no synapses found" in run(dock, qtbot)
    dock.min_size.value = 1e5
    assert run(dock, qtbot).startswith("Done: 2 synapses")
    volumes = dock.result.detections.volumes_nm3
    assert np.all((volumes > 1e5) & (volumes < 2e5))
    assert viewer.layers["EM synapses"].data.shape == (2, 2)
    assert edges_of(dock) == {(1, 2): 1, (1, 3): 1}
    dock.table.click(0)
    assert "synapse" in dock.controls.status.value
    dock.voxel_size.value = "5, 5"  # a hand-typed voxel size survives new layers ...
    viewer.add_image(raw[2], name="other", scale=(8.0, 8.0))
    assert dock.voxel_size.value == "5, 5"
    dock.image.value = viewer.layers["other"]  # ... until another image is chosen
    assert dock.voxel_size.value == "8, 8"


def test_partners_follow_a_one_section_session(make_napari_viewer, qtbot, tmp_path):
    """A 2D session shown as section 1 of the 3D image (a lifted proofread layer)."""
    from napari_connectome._widgets._proofread_store import write_session_store
    from napari_connectome.segmentation import segment_boundaries_state

    raw, seg = scene()
    boundaries = np.zeros(seg.shape[1:], np.float32)
    boundaries[:, 47:49] = 1.0
    boundaries[63:65, 48:] = 1.0
    result = segment_boundaries_state(boundaries, VS[1:])
    display = {"name": "EM", "scale": list(VS), "translate": [VS[0], 0.0, 0.0], "lift": True}
    store = write_session_store(result, tmp_path / "em2d.zarr", 0.5, display)
    viewer = make_napari_viewer()
    viewer.add_image(raw, name="EM", scale=VS)
    _, proofread = viewer.window.add_plugin_dock_widget("napari-connectome", "Proofread")
    proofread.open_store(store)
    qtbot.waitUntil(lambda: proofread.controls.worker is None, timeout=TIMEOUT)
    assert proofread.layer.data.shape == (1, 128, 96)
    state = proofread.controller.state
    left, top, bottom = (state.segment_at(p) for p in ((60, 10), (20, 80), (110, 80)))

    _, dock = viewer.window.add_plugin_dock_widget("napari-connectome", "Synapses")
    dock.custom_model, dock.device.value, dock.scope.value = MODEL, "cpu", CURRENT_SLICE
    dock.probability.value, dock.min_size.value = 0.5, 1e5
    dock.image.value, dock.segmentation.value = viewer.layers["EM"], proofread.layer
    viewer.dims.set_point(0, VS[0])  # section 1, the session's
    status = run(dock, qtbot)
    assert "follow the proofreading session" in status, status
    assert np.all(viewer.layers["EM synapses"].data[:, 0] == 1)
    assert edges_of(dock) == {(left, top): 1, (left, bottom): 1}
    proofread.mode.value = "merge"
    proofread.click((0, 20, 80))
    proofread.click((0, 110, 80))
    kept = state.segment_at((20, 80))
    assert edges_of(dock) == {(left, kept): 2}
    viewer.dims.set_point(0, 2 * VS[0])  # a section the session does not cover
    assert "does not cover this section" in run(dock, qtbot)
