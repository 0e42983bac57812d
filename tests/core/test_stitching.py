import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_connectome.core.agglomeration import agglomerate
from napari_connectome.core.fragments import make_fragments
from napari_connectome.core.region_graph import build_region_graph
from napari_connectome.core.stitching import (
    block_grid,
    face_contacts,
    join_fragments,
    match_face_fragments,
    merge_block_graphs,
)

VOXEL = (40.0, 4.0, 4.0)


def _volume(seed=0, shape=(4, 48, 40)):
    rng = np.random.default_rng(seed)
    bnd = ndi.gaussian_filter(rng.random(shape), (0, 2, 2)).astype(np.float32)
    bnd = (bnd - bnd.min()) / (bnd.max() - bnd.min())
    return make_fragments(bnd, VOXEL, min_size=4), bnd


def test_block_grid_tiles_the_volume_and_clips_the_halo():
    blocks = block_grid((5, 10, 7), (2, 4, 7), halo=(0, 3, 3))
    seen = np.zeros((5, 10, 7), int)
    for b in blocks:
        seen[b.core] += 1
        assert all(o.start >= 0 for o in b.outer)
        assert b.outer[1].stop <= 10 and b.outer[2] == slice(0, 7)
        assert tuple(s.stop - s.start for s in b.inner) == b.shape
    assert (seen == 1).all() and len(blocks) == 3 * 3
    with pytest.raises(ValueError, match="block size"):
        block_grid((5, 10), (0, 4))


def test_blocks_and_face_contacts_rebuild_the_whole_graph_exactly():
    fragments, bnd = _volume()
    q = np.rint(bnd * np.float32(255)).astype(np.uint8)
    blocks = block_grid(fragments.shape, (3, 20, 16))
    pieces, stitched, offset, local_ids = [], np.zeros_like(fragments), 0, {}
    for b in blocks:  # block-local consecutive ids, as a worker makes them
        _, inverse = np.unique(fragments[b.core], return_inverse=True)
        ids = inverse.reshape(b.shape).astype(np.uint64) + 1
        local_ids[b.index] = ids
        g = build_region_graph(ids, bnd[b.core], VOXEL)
        pieces.append({"origin": b.origin, **g.__dict__})
        stitched[b.core] = ids + np.uint64(offset)
        offset += g.n_fragments
    offsets = np.cumsum([0] + [p["fragment_sizes"].size - 1 for p in pieces])
    where = {b.index: k for k, b in enumerate(blocks)}
    faces = []
    for k, b in enumerate(blocks):
        for axis in range(3):
            up = list(b.index)
            up[axis] += 1
            if tuple(up) not in where:
                continue
            j = where[tuple(up)]
            lo = np.take(local_ids[b.index], -1, axis=axis) + np.uint64(offsets[k])
            hi = np.take(local_ids[tuple(up)], 0, axis=axis) + np.uint64(offsets[j])
            qlo = np.take(q[b.core], -1, axis=axis)
            qhi = np.take(q[blocks[j].core], 0, axis=axis)
            area = np.prod(np.delete(VOXEL, axis))
            faces.append(face_contacts(lo, hi, qlo, qhi, area))
    merged = merge_block_graphs(pieces, faces)
    whole = build_region_graph(stitched, bnd, VOXEL)
    for name in ("edges", "contact_area", "max_score", "quantile_score", "fragment_sizes"):
        assert np.array_equal(getattr(merged, name), getattr(whole, name)), name
    assert np.array_equal(merged.fragment_bboxes, whole.fragment_bboxes)
    assert np.allclose(merged.score_sum, whole.score_sum)
    assert np.allclose(merged.contact_weight, whole.contact_weight)


def test_face_contacts_counts_and_scores():
    low = np.array([[1, 1, 2]], np.uint64)
    high = np.array([[5, 5, 5]], np.uint64)
    ql = np.array([[0, 255, 10]], np.uint8)
    qh = np.array([[0, 255, 20]], np.uint8)
    edges, area, weight, ssum, qmax, quant = face_contacts(low, high, ql, qh, 2.0)
    assert edges.tolist() == [[1, 5], [2, 5]]
    assert area.tolist() == [2, 1] and weight.tolist() == [4.0, 2.0]
    assert np.allclose(ssum / weight, [0.5, 30 / 510])
    assert np.allclose(qmax, [1.0, 30 / 510]) and np.allclose(quant, [0.0, 30 / 510])
    with pytest.raises(ValueError, match="one shape"):
        face_contacts(low, high[:, :2], ql, qh)


def test_merge_refuses_a_duplicated_edge():
    piece = {
        "origin": (0, 0),
        "edges": np.array([[1, 2]], np.uint64),
        "contact_area": np.array([1]),
        "contact_weight": np.array([1.0]),
        "score_sum": np.array([0.1]),
        "max_score": np.array([0.1], np.float32),
        "quantile_score": np.array([0.1], np.float32),
        "fragment_sizes": np.array([0, 1, 1]),
        "fragment_bboxes": np.array([[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 1, 2]]),
    }
    face = (np.array([[1, 2]], np.uint64), [1], [1.0], [0.1], [0.1], [0.1])
    with pytest.raises(ValueError, match="appears twice"):
        merge_block_graphs([piece], [face])


def test_match_pairs_pieces_that_both_sides_see_alike():
    # lower block: ids 1 (cut by the face) and 2; upper block: 7 (the other piece of 1), 8
    low_own = np.array([1, 1, 2, 2])
    low_seen = np.array([1, 1, 0, 0])  # the lower block sees its fragment 1 continue
    high_own = np.array([7, 7, 8, 8])
    high_seen = np.array([7, 7, 8, 8])  # 8 reaches over the face, but 2 does not reach back
    assert match_face_fragments(low_own, low_seen, high_own, high_seen).tolist() == [[1, 7]]
    with pytest.raises(ValueError, match="one shape"):
        match_face_fragments(low_own, low_seen[:2], high_own, high_seen)


def test_joining_the_pieces_of_a_cut_fragment_restores_the_graph():
    fragments, bnd = _volume(seed=1, shape=(2, 40, 40))
    cut = fragments.copy()
    n = int(fragments.max())
    right = cut[:, :, 20:]  # cut every fragment crossing x = 20 into two ids
    right[right > 0] += np.uint64(n)
    _, inverse = np.unique(cut, return_inverse=True)
    cut = inverse.reshape(cut.shape).astype(np.uint64) + 1
    pairs = np.unique(np.stack([cut[:, :, 19].ravel(), cut[:, :, 20].ravel()], 1), axis=0)
    # the pairs that belong to one original fragment
    orig = {}
    for f, c in zip(fragments.ravel(), cut.ravel(), strict=True):
        orig[int(c)] = int(f)
    pairs = np.array([p for p in pairs if orig[int(p[0])] == orig[int(p[1])]])
    joined, table = join_fragments(build_region_graph(cut, bnd, VOXEL), pairs)
    whole = build_region_graph(fragments, bnd, VOXEL)
    relabelled = table[cut]
    assert np.array_equal(np.unique(relabelled), np.unique(fragments))
    assert joined.n_fragments == whole.n_fragments
    assert np.array_equal(joined.fragment_sizes, np.bincount(relabelled.ravel()))
    rebuilt = build_region_graph(relabelled, bnd, VOXEL)
    for name in ("edges", "contact_area", "max_score", "fragment_sizes", "fragment_bboxes"):
        assert np.array_equal(getattr(joined, name), getattr(rebuilt, name)), name
    assert np.allclose(joined.score_sum, rebuilt.score_sum)
    a, b = agglomerate(joined), agglomerate(rebuilt)
    assert np.allclose(a.merge_score, b.merge_score)
