"""Placement, filtering and arrows of the Synapses dock, without a viewer."""

from types import SimpleNamespace

import numpy as np
import pytest

from napari_connectome._widgets._scope import Region
from napari_connectome._widgets._synapse_view import (
    ProofreadLink,
    covered_region,
    grid_offset,
    pair_arrows,
    parse_neurons,
    rows_above,
    shifted,
    synapse_pixels,
    to_image,
    top_neurons,
)
from napari_connectome.core.connectome import connectome_edges
from napari_connectome.core.synapses import assign_partners, detect_synapses

VS = (40.0, 4.0, 4.0)


def layer(shape, scale=VS, translate=(0.0, 0.0, 0.0), name="L", metadata=None):
    return SimpleNamespace(
        name=name,
        data=np.zeros(shape, np.uint8),
        scale=np.array(scale),
        translate=np.array(translate),
        metadata=metadata or {},
    )


def test_grid_offset_of_crops_and_refusals():
    image = layer((4, 128, 96), name="EM", translate=(0.0, 100.0, 200.0))
    assert grid_offset(image, layer((4, 128, 96), translate=(0.0, 100.0, 200.0))) == (0, 0, 0)
    crop = layer((1, 32, 32), translate=(80.0, 100.0 + 64, 200.0 + 8))
    assert grid_offset(image, crop) == (2, 16, 2)
    with pytest.raises(ValueError, match="has shape .* but the image 'EM' has shape"):
        grid_offset(image, layer((4, 64, 96), translate=(0.0, 100.0, 200.0)))
    with pytest.raises(ValueError, match="not on the pixel grid"):
        grid_offset(image, layer((4, 128, 96), scale=(40, 8, 8), translate=(0, 100, 200)))
    with pytest.raises(ValueError, match="not on the pixel grid"):
        grid_offset(image, layer((4, 128, 96), translate=(0.0, 101.0, 200.0)))
    with pytest.raises(ValueError, match="is 2D but the image 'EM' is 3D"):
        grid_offset(image, layer((128, 96), scale=VS[1:], translate=(100.0, 200.0)))
    # a crop at the origin made by the plugin (Segment dock metadata) is accepted
    ours = layer(
        (4, 64, 96), translate=(0.0, 100.0, 200.0), metadata={"source": "napari-connectome"}
    )
    assert grid_offset(image, ours) == (0, 0, 0)


def test_covered_region_and_shift():
    region = Region((0, 0, 0), (4, 128, 96))
    inside = covered_region(region, (4, 128, 96), (2, 16, 2), (1, 32, 32))
    assert inside == Region((2, 16, 2), (3, 48, 34))
    assert shifted(inside, (2, 16, 2)) == Region((0, 0, 0), (1, 32, 32))
    plane = Region((1, 0, 0), (2, 128, 96), plane=True)
    with pytest.raises(ValueError, match="does not cover this section"):
        covered_region(plane, (4, 128, 96), (2, 16, 2), (1, 32, 32))


def test_to_image_and_synapse_pixels():
    plane = Region((3, 10, 20), (4, 42, 52), plane=True)
    assert to_image(np.array([[1.0, 2.0]]), plane).tolist() == [[3.0, 11.0, 22.0]]
    box = Region((1, 10, 20), (3, 42, 52))
    assert to_image(np.array([[1.0, 2.0, 3.0]]), box).tolist() == [[2.0, 12.0, 23.0]]
    assert to_image(np.zeros((0, 2)), plane).shape == (0, 3)
    assert synapse_pixels(np.array([[8.0, 12.0]]), VS[1:], plane).tolist() == [[3, 12, 23]]


def test_neurons_rows_and_arrows():
    prob = np.zeros((4, 64, 64), np.float32)
    prob[1:3, 20:30, 30:34] = 0.9
    pre = np.zeros_like(prob)
    pre[1:3, 20:30, 22:30] = 0.9  # presynaptic side: x < 32
    seg = np.ones(prob.shape, np.uint32)
    seg[:, :, 32:] = 7
    det = detect_synapses(prob, VS, min_size_nm3=0, peak_threshold=None)
    table = assign_partners(det, seg, pre)
    assert table.pre.tolist() == [1]
    region = Region((0, 100, 200), (4, 164, 264))
    vectors, rows = pair_arrows(table, VS, region)
    assert rows.tolist() == [0] and vectors.shape == (1, 2, 3)
    start, step = vectors[0]
    assert 100 + 20 <= start[1] < 100 + 30 and start[2] < 200 + 32 <= start[2] + step[2]
    assert pair_arrows(table, VS, region, synapses=np.array([False]))[0].shape == (0, 2, 3)
    rows_all = table.rows()
    assert len(rows_above(rows_all, det.ids, det.confidence, 0.5)) == 1
    assert len(rows_above(rows_all, det.ids, det.confidence, 0.95)) == 0
    edges = connectome_edges(rows_all)
    assert top_neurons(edges) == [1, 7]


def test_top_neurons_follow_the_strongest_connections():
    dtype = [("pre", np.uint64), ("post", np.uint64), ("count", np.int64)]
    # a hub (1) with many weak partners, and one strong pair (5 -> 6)
    edges = np.array([(5, 6, 9), (1, 2, 3), (1, 3, 2), (1, 4, 1), (7, 1, 1)], dtype)
    assert top_neurons(edges, k=4) == [5, 6, 1, 2]
    assert top_neurons(edges, k=5) == [5, 6, 1, 2, 3]
    assert top_neurons(edges, k=3) == [5, 6]  # the next pair does not fit
    assert top_neurons(edges[:0]) == []


def test_parse_neurons():
    assert parse_neurons("12, 40 7, 12") == [12, 40, 7]
    assert parse_neurons("") == []
    with pytest.raises(ValueError, match="segment ids"):
        parse_neurons("12, a")
    with pytest.raises(ValueError, match="positive"):
        parse_neurons("0")


def test_proofread_link_reads_only_the_probes_of_a_lazy_session(
    tmp_path, phantom_segmentation, write_store
):
    from napari_connectome.io.journal import open_proofreading

    result = phantom_segmentation((6, 128, 128), seed=6)
    rng = np.random.default_rng(1)
    coords = np.stack([rng.integers(0, n, 40) for n in (6, 128, 128)], axis=1).astype(float)
    coords[:, 0] = np.where(coords[:, 0] < 3, 1, 4)  # synapses in sections 1 and 4 only
    coords[0] = (-3, 0, 0)  # outside the volume: no fragment
    region = Region((0, 0, 0), (6, 128, 128))
    sessions, links = [], []
    for lazy in (False, True):
        session = open_proofreading(write_store(result, tmp_path / f"{lazy}.zarr"), lazy=lazy)
        derived = []
        table = SimpleNamespace(
            probes=SimpleNamespace(coords=coords), derive=lambda d=derived: d.append(1)
        )
        table.set_probe_fragments = lambda values, t=table: setattr(t, "probe_fragments", values)
        sessions.append(session)
        links.append(ProofreadLink(table, session.history, region, (0, 0, 0), False, lambda: 0))
    memory, lazy = sessions
    frags = lazy.state.fragments
    # the probes' points are read chunk by chunk (a chunk is a section here): sections
    # 1 and 4, never the volume
    assert frags.chunks[0] == 1 and len(frags.reads) <= 2 and sum(frags.reads) <= 2 * 128 * 128
    state = memory.state
    in_volume = links[0].table.probe_fragments[1:]
    assert in_volume.all() and links[0].table.probe_fragments[0] == 0
    a, b = (int(state.table[f]) for f in in_volume[:2])
    split = next(s for s in state.segments.tolist() if len(state.segment_fragments(s)) > 2)
    fragment = int(state.segment_fragments(split)[0])
    box = state.fragment_bbox(fragment)
    where = np.argwhere(state.fragments[box] == fragment)
    seeds = [
        [tuple(int(c + s.start) for c, s in zip(where[i], box, strict=True))] for i in (0, -1)
    ]
    for session in sessions:
        if a != b:
            session.history.merge(a, b)
        session.history.split(split, seeds)  # one fragment cut: voxels rewritten
        session.history.undo()
        session.history.redo()
    first, second = (link.table for link in links)
    np.testing.assert_array_equal(second.probe_fragments, first.probe_fragments)
    np.testing.assert_array_equal(second.segment_table, first.segment_table)
    assert links[1].error is None and frags.n_written
    assert max(frags.reads) < frags.size
    for session in sessions:
        session.close()
