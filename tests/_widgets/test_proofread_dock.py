import datetime as dt
from types import SimpleNamespace

import numpy as np
import pytest
from napari.utils.key_bindings import coerce_keybinding

from napari_connectome._widgets._proofread_session import (
    ProofreadController,
    first_labelled_voxel,
    union_boxes,
)
from napari_connectome._widgets._proofread_store import (
    default_session_path,
    seed_points,
    store_display,
    write_session_store,
)
from napari_connectome.io.journal import journal_path, open_proofreading, read_journal
from napari_connectome.segmentation import segment_boundaries_state

TIMEOUT = 60000  # ms; the machine may be busy
VOXEL = (40.0, 4.0, 4.0)
DISPLAY = {"name": "EM", "scale": [40.0, 4.0, 4.0], "translate": [0.0, 100.0, 200.0]}


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation((4, 96, 96), seed=1)


@pytest.fixture
def store(tmp_path, result):
    return write_session_store(result, tmp_path / "em.zarr", 0.5, DISPLAY)


def open_dock(viewer, qtbot, store=None):
    _, dock = viewer.window.add_plugin_dock_widget("napari-connectome", "Proofread")
    if store is not None:
        dock.open_store(store)
        wait(dock, qtbot)
    return dock


def wait(dock, qtbot):
    qtbot.waitUntil(lambda: dock.controls.worker is None, timeout=TIMEOUT)
    assert not dock.status.startswith("Error"), dock.status


def voxel_of(state, segment, fragment_index=0):
    """A voxel of one fragment of a segment."""
    fragment = int(state.segment_fragments(segment)[fragment_index])
    box = state.fragment_bbox(fragment)
    where = np.argwhere(state.fragments[box] == fragment)[0]
    return tuple(int(c + s.start) for c, s in zip(where, box, strict=True))


def two_segments(state):
    sizes = sorted(state.segments.tolist(), key=state.segment_size)
    return sizes[-2], sizes[-1]


def multi_fragment_segment(state):
    return next(s for s in state.segments.tolist() if len(state.segment_fragments(s)) >= 2)


def journal_kinds(store):
    return [r["kind"] for r in read_journal(journal_path(store)).records]


def test_open_store_shows_labels_placed_from_the_store(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer()
    dock = open_dock(viewer, qtbot, store)
    layer = viewer.layers["EM proofread"]
    assert layer is dock.layer
    np.testing.assert_array_equal(layer.data, dock.controller.state.segmentation())
    np.testing.assert_allclose(layer.scale, DISPLAY["scale"])
    np.testing.assert_allclose(layer.translate, DISPLAY["translate"])
    assert str(store) in dock.session_path.value
    assert "segments" in dock.counts.value and dock.history_list.count() == 1
    assert "Ctrl+Z" in dock.shortcuts.value and "not" in dock.note.value


def test_store_from_the_cli_is_placed_by_voxel_size(
    make_napari_viewer, qtbot, tmp_path, result, write_store
):
    path = write_store(result, tmp_path / "seg.zarr", VOXEL)
    viewer = make_napari_viewer()
    dock = open_dock(viewer, qtbot)
    dock.store.value = path
    dock.controls.run_button.clicked.emit()
    wait(dock, qtbot)
    np.testing.assert_allclose(viewer.layers["seg proofread"].scale, VOXEL)


def test_merge_by_clicks_changes_labels_in_its_box_and_journals(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer()
    dock = open_dock(viewer, qtbot, store)
    state, layer = dock.controller.state, dock.layer
    data, before = layer.data, layer.data.copy()
    a, b = two_segments(state)
    dock.mode.value = "merge"
    assert "selected: " + str(a) in dock.click(voxel_of(state, a), shift=True).message
    outcome = dock.click(voxel_of(state, b))
    assert not outcome.error and "merged" in dock.status
    assert layer.data is data  # written in place, never reassigned
    changed = np.argwhere(layer.data != before)
    assert len(changed)
    lo = np.array([s.start for s in outcome.box])
    hi = np.array([s.stop for s in outcome.box])
    assert (changed >= lo).all() and (changed < hi).all()
    np.testing.assert_array_equal(layer.data, state.segmentation())
    assert journal_kinds(store) == ["merge"]
    assert dock.history_list.count() == 2 and "1 edits this session" in dock.counts.value


def test_mouse_callback_in_2d_and_3d_views(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer()
    dock = open_dock(viewer, qtbot, store)
    state, layer = dock.controller.state, dock.layer
    (callback,) = [cb for cb in layer.mouse_drag_callbacks if cb == dock._on_mouse]
    a, b = two_segments(state)
    dock.mode.value = "lock"
    world = np.asarray(voxel_of(state, a)) * layer.scale + layer.translate
    event = SimpleNamespace(
        type="mouse_press",
        button=1,
        modifiers=(),
        position=tuple(world),
        dims_displayed=[1, 2],
        view_direction=None,
    )
    callback(layer, event)
    assert state.is_locked(a) and f"locked {a}" in dock.status
    assert f"locked: {a}" in dock.counts.value
    # 3D: a ray along z through a voxel of b hits b's first voxel on that line
    z, y, x = voxel_of(state, b)
    column = state.segmentation()[:, y, x]
    first = int(np.flatnonzero(column)[0])
    start = np.array([-5.0, y, x]) * layer.scale + layer.translate
    event.position, event.dims_displayed = tuple(start), [0, 1, 2]
    event.view_direction = (1.0, 0.0, 0.0)
    hit = int(column[first])
    was = state.is_locked(hit)
    callback(layer, event)
    assert state.is_locked(hit) != was
    assert journal_kinds(store) == ["lock", "unlock" if was else "lock"]


def test_split_with_seeds_preview_and_commit(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer()
    dock = open_dock(viewer, qtbot, store)
    state, layer = dock.controller.state, dock.layer
    s = multi_fragment_segment(state)
    n_before = len(state.segments)
    dock.mode.value = "split"
    dock.click(voxel_of(state, s, 0))
    dock.preview_button.clicked.emit()
    assert dock.status.startswith("Error") and "two or more" in dock.status  # one part only
    dock.click(voxel_of(state, s, -1), shift=True)  # shift: seeds part 2
    seeds = viewer.layers["split seeds"]
    assert len(seeds.data) == 2 and not np.allclose(seeds.face_color[0], seeds.face_color[1])
    assert viewer.layers.selection.active is layer  # clicks still reach the proofread layer
    dock.preview_button.clicked.emit()
    assert dock.status.startswith("preview")
    preview = viewer.layers["split preview"]
    assert set(np.unique(preview.data)) == {0, 1, 2}
    np.testing.assert_array_equal(layer.data, state.segmentation())  # nothing changed yet
    dock.commit_button.clicked.emit()
    assert dock.status.startswith(f"split {s} into"), dock.status
    assert len(state.segments) == n_before + 1
    assert "split seeds" not in viewer.layers and "split preview" not in viewer.layers
    np.testing.assert_array_equal(layer.data, state.segmentation())
    assert journal_kinds(store) == ["split"]


def test_undo_redo_keys_and_history_click(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer()
    dock = open_dock(viewer, qtbot, store)
    state, layer = dock.controller.state, dock.layer
    start = layer.data.copy()
    segs = state.segments.tolist()
    history = dock.controller.history
    history_states = [state.table.copy()]
    dock.mode.value = "merge"
    for a, b in ((segs[0], segs[1]), (segs[2], segs[3])):
        dock.click(voxel_of(state, a), shift=True)
        dock.click(voxel_of(state, b), shift=True)
        layer.keymap[coerce_keybinding("Enter")](layer)
        history_states.append(state.table.copy())
    assert len(history) == 2
    layer.keymap[coerce_keybinding("Control-Z")](layer)
    assert len(history) == 1 and dock.status.startswith("undid")
    np.testing.assert_array_equal(state.table, history_states[1])
    layer.keymap[coerce_keybinding("Control-Shift-Z")](layer)
    assert len(history) == 2
    np.testing.assert_array_equal(layer.data, state.segmentation())
    item = dock.history_list.item(0)  # "session start"
    dock.history_list.itemClicked.emit(item)
    assert len(history) == 0 and history.can_redo
    np.testing.assert_array_equal(layer.data, start)
    assert dock.history_list.count() == 3  # start + two undone rows
    dock.history_list.itemClicked.emit(dock.history_list.item(2))
    assert len(history) == 2
    np.testing.assert_array_equal(state.table, history_states[2])
    assert journal_kinds(store) == ["merge", "merge", "undo", "redo", "undo", "undo"] + [
        "redo",
        "redo",
    ]
    layer.keymap[coerce_keybinding("S")](layer)
    assert dock.mode.value == "split" and dock.controller.mode == "split"
    layer.keymap[coerce_keybinding("Escape")](layer)
    assert dock.status.startswith("cleared")


def test_locked_segment_is_refused_with_a_message(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer()
    dock = open_dock(viewer, qtbot, store)
    state, layer = dock.controller.state, dock.layer
    a, b = two_segments(state)
    dock.mode.value = "lock"
    dock.click(voxel_of(state, a))
    before = layer.data.copy()
    dock.mode.value = "merge"
    dock.click(voxel_of(state, a), shift=True)
    outcome = dock.click(voxel_of(state, b))
    assert outcome.error and "locked" in dock.status
    np.testing.assert_array_equal(layer.data, before)
    assert journal_kinds(store) == ["lock"]
    assert dock.click((9, 0, 0)).error  # outside the volume


def test_reopening_replays_the_journal(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer()
    dock = open_dock(viewer, qtbot, store)
    state = dock.controller.state
    a, b = two_segments(state)
    va, vb = voxel_of(state, a), voxel_of(state, b)
    dock.mode.value = "merge"
    dock.click(va, shift=True)
    dock.click(vb)
    dock.mode.value = "lock"
    dock.click(va)
    layer = dock.layer
    dock.open_store(store)  # the same store again: replayed, same layer
    wait(dock, qtbot)
    again = dock.controller.state
    assert again is not state and dock.layer is layer
    np.testing.assert_array_equal(again.table, state.table)
    assert again.locked == state.locked and "2 journaled edits" in dock.status
    np.testing.assert_array_equal(layer.data, again.segmentation())


def test_from_segment_dock_writes_a_session_store(make_napari_viewer, qtbot, tmp_path, result):
    viewer = make_napari_viewer()
    _, segment = viewer.window.add_plugin_dock_widget("napari-connectome", "Segment")
    dock = open_dock(viewer, qtbot)
    dock.from_segment.clicked.emit()
    assert dock.status.startswith("Error") and "no result" in dock.status
    segment.result = result
    segment.threshold.value = 0.5
    viewer.add_labels(
        result.segmentation_at(0.5),
        name="EM segmentation",
        scale=(40, 4, 4),
        translate=(0, 8, 12),
        metadata={"source": "napari-connectome Segment dock"},
    )
    dock.new_store.value = tmp_path / "session.zarr"
    dock.from_segment.clicked.emit()
    wait(dock, qtbot)
    layer = viewer.layers["EM proofread"]
    np.testing.assert_allclose(layer.translate, (0, 8, 12))
    np.testing.assert_array_equal(layer.data, result.segmentation_at(0.5))
    assert (tmp_path / "session.zarr" / "proofreading" / "journal.jsonl").exists()
    dock.from_segment.clicked.emit()  # the store exists now: refused
    assert dock.status.startswith("Error") and "exists" in dock.status


@pytest.mark.parametrize("lazy", [False, True], ids=["in_memory", "lazy"])
def test_plane_result_is_lifted_into_its_section(
    make_napari_viewer, qtbot, tmp_path, result, lazy
):
    plane = segment_boundaries_state(result.boundaries[2], VOXEL[1:])
    viewer = make_napari_viewer()
    dock = open_dock(viewer, qtbot)
    dock.lazy = lazy
    dock.start_from_result(
        plane, 0.5, name="EM", translate=(80, 0, 0), lift=True, path=tmp_path / "p.zarr"
    )
    wait(dock, qtbot)
    layer, state = dock.layer, dock.controller.state
    assert layer.data.shape == (1, 96, 96)
    np.testing.assert_allclose(layer.scale, (1, 4, 4))
    a, b = two_segments(state)
    dock.mode.value = "merge"
    dock.click((0, *voxel_of(state, a)), shift=True)
    assert not dock.click((0, *voxel_of(state, b))).error
    assert isinstance(layer.data, np.ndarray) != lazy
    np.testing.assert_array_equal(layer.data[0], state.labels_in((slice(0, 96), slice(0, 96))))
    assert dock.click((1, 0, 0)).error


def test_napari_paint_is_flagged_as_not_journaled(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer()
    dock = open_dock(viewer, qtbot, store)
    dock.layer.events.paint(value=[])
    assert dock.status.startswith("Warning") and "not journaled" in dock.status


# --- the pure helpers --------------------------------------------------------------------


def test_default_session_path():
    now = dt.datetime(2024, 5, 6, 7, 8, 9)
    path = default_session_path("EM / raw", now, root="/data")
    assert str(path) == "/data/EM_raw-20240506-070809.zarr"
    assert default_session_path("x", now).parent.name == "napari-connectome-sessions"


def test_first_labelled_voxel_and_union_boxes():
    labels = np.zeros((5, 4, 4), dtype=np.uint32)
    labels[3, 1, 2] = 7
    labels[4, 1, 2] = 8
    assert first_labelled_voxel(labels, (-0.5, 1, 2), (4.5, 1, 2)) == (3, 1, 2)
    assert first_labelled_voxel(labels, (4.5, 1, 2), (-0.5, 1, 2)) == (4, 1, 2)
    assert first_labelled_voxel(labels, (0, 0, 0), (4, 0, 0)) is None
    assert first_labelled_voxel(labels, None, None) is None
    a, b = (slice(0, 2), slice(3, 4)), (slice(1, 5), slice(0, 1))
    assert union_boxes(a, b) == (slice(0, 5), slice(0, 4))
    assert union_boxes(None, (slice(2, 2), slice(0, 1))) is None


def test_controller_refuses_bad_clicks(store):
    session = open_proofreading(store)
    try:
        c = ProofreadController(session)
        state = c.state
        background = np.argwhere(state.segmentation() == 0)
        if len(background):
            assert "background" in c.click(tuple(background[0])).message
        assert c.click((99, 0, 0)).error
        a, b = two_segments(state)
        c.set_mode("split")
        c.click(voxel_of(state, a))
        out = c.click(voxel_of(state, b), shift=True)
        assert out.error and f"not in segment {a}" in out.message
        assert c.commit().error  # one part only
        assert c.next_part().message == "seeds go to part 2"
        assert c.next_part().error  # part 2 has no seed yet
        assert c.set_mode("paint").error
        c.set_mode("pick")
        assert c.click(voxel_of(state, a)).message.startswith(f"segment {a}:")
        assert c.commit().error and c.undo().error and c.redo().error
        assert c.go_to(5).error
        assert c.rows() == [("0. session start", True)]
    finally:
        session.close()


def test_seed_points_and_store_display(tmp_path):
    coords, colors = seed_points([[(1, 2, 3)], [(4, 5, 6), (7, 8, 9)]], False, ("r", "g"))
    assert coords.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]] and colors == ["r", "g", "g"]
    coords, _ = seed_points([[(2, 3)]], True, ("r",))
    assert coords.tolist() == [[0, 2, 3]]
    assert seed_points([[]], False, ("r",))[0].shape[0] == 0
    place = store_display({"voxel_size": [40, 4, 4]}, tmp_path / "cell.zarr", 3)
    assert place == {
        "name": "cell",
        "scale": [40.0, 4.0, 4.0],
        "translate": [0.0, 0.0, 0.0],
        "lift": False,
    }


# --- stores bigger than memory: the lazy path ----------------------------------------------


@pytest.fixture(scope="module")
def big_result(phantom_segmentation):
    return phantom_segmentation((8, 256, 256), seed=2)


def shown(layer):
    """The labels napari sliced for the canvas (what the user sees)."""
    return np.asarray(layer._slice.image.raw)  # noqa: SLF001 - napari's current slice


def test_big_store_opens_lazily_by_size(tmp_path, big_result, monkeypatch):
    from napari_connectome._widgets import _proofread_store as stores
    from napari_connectome.io.lazy_state import PatchedVolume

    path = write_session_store(big_result, tmp_path / "big.zarr", 0.5, DISPLAY)
    assert stores.fragments_bytes(path) == 8 * 256 * 256 * 8
    assert 0 < stores.lazy_budget() <= 512 * 2**20
    monkeypatch.setattr(stores, "LAZY_BYTES", 8 * 256 * 256 * 8 - 1)
    session, _ = stores.open_session(path)
    assert isinstance(session.state.fragments, PatchedVolume)
    session.close()
    monkeypatch.setattr(stores, "LAZY_BYTES", 8 * 256 * 256 * 8)
    session, _ = stores.open_session(path)
    assert isinstance(session.state.fragments, np.ndarray)
    session.close()


def test_lazy_dock_reads_the_shown_plane_only_and_edits_as_in_memory(
    make_napari_viewer, qtbot, tmp_path, big_result
):
    from napari_connectome.io.lazy_labels import LazyLabels

    paths = [write_session_store(big_result, tmp_path / f"{k}.zarr", 0.5, DISPLAY) for k in "ab"]
    viewer = make_napari_viewer()
    _, dock = viewer.window.add_plugin_dock_widget("napari-connectome", "Proofread")
    dock.lazy = True
    dock.open_store(paths[0])
    wait(dock, qtbot)
    assert "read from disk" in dock.status
    state, layer = dock.controller.state, dock.layer
    labels, frags = layer.data, state.fragments
    assert isinstance(labels, LazyLabels) and labels.shape == (8, 256, 256)
    plane = 256 * 256
    assert labels.reads and all(r[0].stop - r[0].start == 1 for r in labels.reads)
    assert sum(frags.reads) <= 3 * plane  # a plane or two, never the volume
    z = int(round(viewer.dims.point[0] / DISPLAY["scale"][0]))
    box = (slice(z, z + 1), slice(0, 256), slice(0, 256))
    np.testing.assert_array_equal(shown(layer), state.labels_in(box)[0])

    # the same merge, split and undo on a lazy and an in-memory dock
    viewer2 = make_napari_viewer()
    _, memory = viewer2.window.add_plugin_dock_widget("napari-connectome", "Proofread")
    memory.lazy = False
    memory.open_store(paths[1])
    wait(memory, qtbot)
    assert isinstance(memory.layer.data, np.ndarray)
    ref = memory.controller.state
    in_plane = [int(s) for s in np.unique(labels[z]) if s]
    a, b = sorted(in_plane, key=state.segment_size)[-2:]
    split = next(
        s for s in ref.segments.tolist() if s not in (a, b) and len(ref.segment_fragments(s)) > 1
    )
    va, vb = voxel_of(ref, a), voxel_of(ref, b)
    seeds = voxel_of(ref, split, 0), voxel_of(ref, split, -1)
    for d in (dock, memory):
        d.mode.value = "merge"
        d.click(va, shift=True)
        assert not d.click(vb).error, d.status
        d.mode.value = "split"
        d.click(seeds[0])
        d.click(seeds[1], shift=True)
        d.preview_button.clicked.emit()
        assert d.status.startswith("preview"), d.status
        d.commit_button.clicked.emit()
        assert d.status.startswith(f"split {split} into"), d.status
        d.undo_button.clicked.emit()
        assert d.status.startswith("undid"), d.status
    assert journal_kinds(paths[0]) == journal_kinds(paths[1]) == ["merge", "split", "undo"]
    np.testing.assert_array_equal(state.table, ref.table)
    merged = state.segment_at(va)
    assert merged == state.segment_at(vb)
    np.testing.assert_array_equal(shown(layer), memory.layer.data[z])  # napari re-read it
    assert merged in shown(layer)
    # no read of the whole volume: planes shown and the edited segments' boxes only
    assert max(frags.reads) < frags.size
    ray = (0.0, 37.0, 201.0), (7.0, 90.0, 20.0)  # a 3D click reads points along the ray
    assert first_labelled_voxel(labels, *ray) == first_labelled_voxel(memory.layer.data, *ray)
    for zz in range(8):  # every plane as the in-memory dock has it
        np.testing.assert_array_equal(labels[zz], memory.layer.data[zz])


def test_review_dock_works_on_a_lazy_session(make_napari_viewer, qtbot, tmp_path, big_result):
    path = write_session_store(big_result, tmp_path / "big.zarr", 0.5, DISPLAY)
    viewer = make_napari_viewer()
    _, proof = viewer.window.add_plugin_dock_widget("napari-connectome", "Proofread")
    proof.lazy = True
    proof.open_store(path)
    wait(proof, qtbot)
    frags = proof.controller.state.fragments
    _, review = viewer.window.add_plugin_dock_widget("napari-connectome", "Review")
    review.controls.run_button.clicked.emit()
    qtbot.waitUntil(lambda: review.review is not None, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: review.controls.worker is None, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: not review.panel_pending, timeout=TIMEOUT)
    c = review.review.current
    assert c is not None, review.status
    outcome = review.accept()
    assert review.status.startswith("accepted"), review.status
    assert journal_kinds(path) == [c.kind]
    assert not outcome.error and max(frags.reads) < frags.size  # item boxes, never the volume
    proof.undo_button.clicked.emit()
    assert journal_kinds(path) == [c.kind, "undo"]
