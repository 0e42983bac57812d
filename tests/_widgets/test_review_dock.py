import json

import numpy as np
import pytest
from napari.utils.key_bindings import coerce_keybinding
from napari.utils.shortcuts import default_shortcuts

from napari_connectome._widgets._proofread_session import SHORTCUTS
from napari_connectome._widgets._proofread_store import write_session_store
from napari_connectome._widgets._review_session import (
    review_path,
    view_box,
)
from napari_connectome._widgets.review_dock import DIM, ITEM_LAYER, KEYS, OUTLINE
from napari_connectome.io.journal import journal_path, read_journal

TIMEOUT = 60000  # ms; the machine may be busy
VOXEL = (40.0, 4.0, 4.0)
DISPLAY = {"name": "EM", "scale": [40.0, 4.0, 4.0], "translate": [0.0, 100.0, 200.0]}


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation((4, 96, 96), seed=1)


@pytest.fixture
def store(tmp_path, result):
    return write_session_store(result, tmp_path / "em.zarr", 0.5, DISPLAY)


def open_proofread(viewer, qtbot, store):
    _, dock = viewer.window.add_plugin_dock_widget("napari-connectome", "Proofread")
    dock.open_store(store)
    qtbot.waitUntil(lambda: dock.controls.worker is None, timeout=TIMEOUT)
    assert dock.controller is not None, dock.status
    return dock


def open_review(viewer, qtbot, store=None, start=True):
    _, dock = viewer.window.add_plugin_dock_widget("napari-connectome", "Review")
    if store is not None:
        dock.store.value = store
    if start:
        dock.controls.run_button.clicked.emit()
        wait(dock, qtbot)
    return dock


def wait(dock, qtbot):
    qtbot.waitUntil(
        lambda: dock.review is not None or dock.status.startswith("Error"), timeout=TIMEOUT
    )
    qtbot.waitUntil(lambda: dock.controls.worker is None, timeout=TIMEOUT)
    settle(dock, qtbot)


def settle(dock, qtbot):
    """Wait for the table and progress, updated just after the item is shown."""
    qtbot.waitUntil(lambda: not dock.panel_pending, timeout=TIMEOUT)


def press(viewer, key):
    return viewer.keymap[coerce_keybinding(key)](viewer)


def journal_kinds(store):
    return [r["kind"] for r in read_journal(journal_path(store)).records]


def statuses_on_disk(store):
    return json.loads(review_path(store).read_text())["statuses"]


def test_next_item_centres_highlights_dims_and_previews(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer()
    proof = open_proofread(viewer, qtbot, store)
    dock = open_review(viewer, qtbot)
    assert dock.review is not None, dock.status
    c = dock.review.current  # the first item is shown at the start
    assert c is not None and c is dock.review.queue.next()
    assert dock.status.startswith("Review of em.zarr") and "item:" in dock.status
    state, layer = proof.controller.state, proof.layer
    box = view_box(c, state.fragments.shape)
    item = viewer.layers[ITEM_LAYER]
    # the layer holds values in the box only, placed on the proofread layer's grid
    assert item.data.shape == layer.data.shape and item.data.box == box
    np.testing.assert_allclose(item.translate, layer.translate)
    np.testing.assert_allclose(item.scale, layer.scale)
    values = item.data.values
    # the segments involved are outlined, the suggested fix fills them in
    inside = np.isin(state.labels_in(box), c.segments)
    outline = values == OUTLINE
    assert outline.any() and np.all(inside[outline]) and outline.sum() < inside.sum()
    fix = c.preview_labels(state, box)
    np.testing.assert_array_equal(values[~outline], fix[~outline])
    np.testing.assert_array_equal(values > 0, inside)  # only the segments involved
    expected = {0, 1, OUTLINE} if c.kind == "merge" else {0, 1, 2, OUTLINE}
    assert set(np.unique(values)) <= expected and 1 in values
    z = int(np.asarray(c.location)[0])
    dense = np.zeros(layer.data.shape[1:], values.dtype)
    dense[box[1:]] = values[z - box[0].start]
    np.testing.assert_array_equal(item.data[z], dense)
    # the rest dimmed, the camera on the item, the z slider on its slice
    assert layer.opacity == pytest.approx(DIM)
    centre = layer.data_to_world([(s.start + s.stop - 1) / 2 for s in box])
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    np.testing.assert_allclose(camera.center[-2:], centre[-2:])
    assert viewer.dims.point[0] == pytest.approx(centre[0], abs=layer.scale[0])
    shown = item._slice.image.raw  # what napari drew: this slice of the item
    np.testing.assert_array_equal(np.asarray(shown), item.data[viewer.dims.current_step[0]])
    # the table lists the queue with kind, score and status, the item selected
    rows = dock.model.rows
    assert len(rows) == dock.review.progress()["total"]
    assert rows[0][0] == c.id and rows[0][5] == "pending"
    assert dock.table.selectionModel().selectedRows()[0].row() == 0
    assert (
        "reviewed 0 of" in dock.progress.value and "estimated errors left" in dock.progress.value
    )


def test_showing_an_item_reads_only_its_box(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer()
    proof = open_proofread(viewer, qtbot, store)
    dock = open_review(viewer, qtbot)
    state = proof.controller.state

    class Recording(np.ndarray):
        reads: list = []

        def __getitem__(self, key):
            Recording.reads.append(key)
            return super().__getitem__(key)

    state.fragments = state.fragments.view(Recording)
    Recording.reads.clear()
    layer_data = proof.layer.data
    dock.next_item()
    c = dock.review.current
    box = view_box(c, state.fragments.shape)
    assert Recording.reads, "showing an item must read the item's labels"
    box_size = int(np.prod([s.stop - s.start for s in box]))
    for key in Recording.reads:
        assert isinstance(key, tuple) and len(key) == 3, key
        shape = state.fragments.shape
        size = np.prod([len(range(*s.indices(n))) for s, n in zip(key, shape, strict=True)])
        assert size <= box_size
        for s, b in zip(key, box, strict=True):
            assert b.start <= s.start and s.stop <= b.stop
    assert proof.layer.data is layer_data  # the proofread layer is not rewritten


def test_accept_applies_the_fix_through_the_proofread_session_and_undo_restores(
    make_napari_viewer, qtbot, store
):
    viewer = make_napari_viewer()
    proof = open_proofread(viewer, qtbot, store)
    dock = open_review(viewer, qtbot)
    state, layer = proof.controller.state, proof.layer
    before = layer.data.copy()
    c = dock.review.current
    press(viewer, "G")  # accept
    assert dock.status.startswith("accepted"), dock.status
    assert journal_kinds(store) == [c.kind]  # journaled by the Proofread dock's session
    assert len(proof.controller.history) == 1 and proof.history_list.count() == 2
    np.testing.assert_array_equal(layer.data, state.segmentation())
    assert not np.array_equal(layer.data, before)
    if c.kind == "merge":
        assert not all(state.has_segment(s) for s in c.segments)
    assert statuses_on_disk(store)[c.id] == "accepted"
    assert dock.review.current is not None and dock.review.current.id != c.id  # advanced
    # Ctrl+Z in the Proofread dock undoes the fix; the item is pending again
    proof.layer.keymap[coerce_keybinding("Control-Z")](proof.layer)
    np.testing.assert_array_equal(layer.data, before)
    np.testing.assert_array_equal(state.segmentation(), before)
    assert journal_kinds(store) == [c.kind, "undo"]
    assert dock.review.queue.status.get(c.id) == "pending"
    assert c.id not in statuses_on_disk(store)
    qtbot.waitUntil(lambda: "reviewed 0 of" in dock.progress.value, timeout=TIMEOUT)


def test_reject_skip_and_statuses_survive_reopening(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer()
    proof = open_proofread(viewer, qtbot, store)
    dock = open_review(viewer, qtbot)
    answers = {}
    for key, status in (("G", "accepted"), ("W", "rejected"), ("K", "skipped")):
        cid = dock.review.current.id
        outcome = press(viewer, key)
        assert not outcome.error, outcome.message
        answers[cid] = status
        assert dock.review.queue.status.get(cid, status) == status
    assert dock.panel_pending  # the item first, the table just after
    settle(dock, qtbot)
    rows = {r[0]: r[5] for r in dock.model.rows}
    assert {cid: rows[cid] for cid in answers} == answers
    assert "reviewed 2 of" in dock.progress.value
    assert "accepted 50% of the last 2 reviews" in dock.progress.value
    total = dock.review.progress()["total"]
    table = proof.controller.state.table.copy()
    proof.controller.session.close()
    viewer.close()

    viewer = make_napari_viewer()
    open_proofread(viewer, qtbot, store)
    dock = open_review(viewer, qtbot, store)
    assert dock.review is not None, dock.status
    np.testing.assert_array_equal(dock.proofread.controller.state.table, table)  # replayed
    assert "2 reviewed before" in dock.status
    rows = {r[0]: r[5] for r in dock.model.rows}
    assert {cid: rows[cid] for cid in answers} == answers
    assert dock.review.progress()["total"] == total
    assert "accepted 50% of the last 2 reviews" in dock.progress.value
    assert dock.review.current.id not in answers  # answered and skipped items are not served
    assert len(dock.review.queue.answers) == 2  # both answers still teach the scorer


def test_start_opens_the_store_in_a_proofread_dock(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer()
    dock = open_review(viewer, qtbot, store)
    assert dock.review is not None, dock.status
    assert dock.proofread is not None and dock.proofread.controller.session is dock.review.session
    assert "EM proofread" in viewer.layers and ITEM_LAYER in viewer.layers


def test_no_store_or_no_region_graph_says_to_segment_first(make_napari_viewer, qtbot, tmp_path):
    import zarr

    viewer = make_napari_viewer()
    dock = open_review(viewer, qtbot)
    assert dock.status.startswith("Error: no segmentation store") and "Segment" in dock.status
    for name in ("next_button", "accept_button", "reject_button", "skip_button"):
        assert not getattr(dock, name).enabled
    assert press(viewer, "N").error
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w").create_array("raw", shape=(2, 8, 8), dtype="uint8")
    dock.store.value = plain
    dock.controls.run_button.clicked.emit()
    qtbot.waitUntil(lambda: dock.status.startswith("Error"), timeout=TIMEOUT)
    assert "region graph" in dock.status and "segment" in dock.status
    dock.store.value = tmp_path / "missing.zarr"
    dock.controls.run_button.clicked.emit()
    assert "no segmentation store at" in dock.status and "Segment" in dock.status


def test_kind_filter_retrain_and_acceptance_rate(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer()
    open_proofread(viewer, qtbot, store)
    dock = open_review(viewer, qtbot)
    dock.kind.value = dock.kind.choices[2]  # false merges only
    settle(dock, qtbot)
    assert all(r[1] == "split" for r in dock.model.rows) and dock.model.rows
    press(viewer, "N")
    assert dock.review.current.kind == "split"
    dock.kind.value = dock.kind.choices[1]
    press(viewer, "N")
    settle(dock, qtbot)
    assert dock.review.current.kind == "merge"
    assert all(r[1] == "merge" for r in dock.model.rows)
    dock.retrain_every.value = 3
    assert dock.review.queue.retrain_every == 3
    dock.retrain_button.clicked.emit()
    assert dock.status.startswith("retrained on 0 answers")
    for _ in range(2):
        press(viewer, "W")
    settle(dock, qtbot)
    assert "accepted 0% of the last 2 reviews" in dock.progress.value
    assert len(dock.review.queue.answers) == 2


def test_keys_are_free_bound_on_the_viewer_and_given_back(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer()
    dock = open_review(viewer, qtbot, start=False)
    keys = [k for k, _ in KEYS]
    napari_keys = {str(kb) for binds in default_shortcuts.values() for kb in binds}
    proofread_keys = {"Ctrl+Z", "Ctrl+Shift+Z", "P", "M", "S", "L", "Enter", "Escape"}
    proofread_keys |= {str(k) for k in range(1, 10)}
    assert any(k == "P / M / S / L" for k, _ in SHORTCUTS)
    for key in keys:
        assert str(coerce_keybinding(key)) not in napari_keys
        assert key not in proofread_keys
        assert coerce_keybinding(key) in viewer.keymap
    dock.unbind_keys()
    assert all(coerce_keybinding(k) not in viewer.keymap for k in keys)


def test_a_plane_lifted_into_its_section_is_reviewed(make_napari_viewer, qtbot, tmp_path, result):
    from napari_connectome.segmentation import segment_boundaries_state

    plane = segment_boundaries_state(result.boundaries[2], VOXEL[1:])
    viewer = make_napari_viewer()
    _, proof = viewer.window.add_plugin_dock_widget("napari-connectome", "Proofread")
    proof.start_from_result(
        plane, 0.5, name="EM", translate=(80, 0, 0), lift=True, path=tmp_path / "p.zarr"
    )
    qtbot.waitUntil(lambda: proof.controls.worker is None, timeout=TIMEOUT)
    dock = open_review(viewer, qtbot)
    assert dock.review is not None, dock.status
    item = viewer.layers[ITEM_LAYER]
    assert item.data.shape == proof.layer.data.shape == (1, 96, 96)
    assert item.data.box[0] == slice(0, 1) and (item.data.values > 0).any()
    assert not press(viewer, "G").error
    np.testing.assert_array_equal(proof.layer.data[0], proof.controller.state.segmentation())
