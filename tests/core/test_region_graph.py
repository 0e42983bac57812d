import itertools

import numpy as np
import pytest

from napari_connectome.core.region_graph import (
    SCORE_QUANTILE,
    RegionGraph,
    build_region_graph,
    fragment_bboxes,
)


def brute_force_graph(frags, bnd, voxel_size=None):
    """Loop over every voxel face: {(u, v): [faces, weight, weighted sum, values]}."""
    q = np.rint(bnd.astype(np.float32) * 255.0)
    vs = np.ones(frags.ndim) if voxel_size is None else np.asarray(voxel_size, float)
    out = {}
    for idx in itertools.product(*[range(s) for s in frags.shape]):
        for axis in range(frags.ndim):
            nb = list(idx)
            nb[axis] += 1
            if nb[axis] >= frags.shape[axis]:
                continue
            nb = tuple(nb)
            a, b = int(frags[idx]), int(frags[nb])
            if a == b or a == 0 or b == 0:
                continue
            key = (min(a, b), max(a, b))
            value = (q[idx] + q[nb]) / 510.0
            w = float(np.prod(np.delete(vs, axis)))
            rec = out.setdefault(key, [0, 0.0, 0.0, []])
            rec[0] += 1
            rec[1] += w
            rec[2] += w * value
            rec[3].append(value)
    return out


@pytest.mark.parametrize("shape", [(5, 6, 7), (9, 11)])
@pytest.mark.parametrize("voxel_size", [None, "aniso"])
def test_matches_brute_force(shape, voxel_size):
    rng = np.random.default_rng(sum(shape))
    frags = rng.integers(0, 7, size=shape).astype(np.uint64)
    # blocky fragments so that some pairs have many faces
    frags[..., : shape[-1] // 2] = 3
    bnd = rng.random(shape, dtype=np.float32)
    vs = None if voxel_size is None else (40.0, 5.0, 4.0)[-len(shape) :]
    g = build_region_graph(frags, bnd, vs)
    ref = brute_force_graph(frags, bnd, vs)
    assert [tuple(e) for e in g.edges.tolist()] == sorted(ref)
    assert g.edges.dtype == np.uint64
    assert np.all(g.edges[:, 0] < g.edges[:, 1])
    for i, key in enumerate(sorted(ref)):
        faces, weight, wsum, values = ref[key]
        assert g.contact_area[i] == faces
        assert g.contact_weight[i] == pytest.approx(weight)
        assert g.score_sum[i] == pytest.approx(wsum)
        assert g.mean_score[i] == pytest.approx(wsum / weight)
        values = np.sort(values)
        assert g.max_score[i] == pytest.approx(values[-1], abs=1e-6)
        k = int(np.floor(SCORE_QUANTILE * (len(values) - 1)))
        assert g.quantile_score[i] == pytest.approx(values[k], abs=1e-6)
    np.testing.assert_array_equal(
        g.fragment_sizes, np.bincount(frags.ravel().astype(np.intp), minlength=7)
    )


def test_sizes_and_bboxes():
    frags = np.zeros((4, 5, 6), np.uint64)
    frags[1:3, 0:2, 3:6] = 1
    frags[3, 4, 5] = 3
    g = build_region_graph(frags, np.zeros(frags.shape, np.float32))
    assert g.n_fragments == 3
    assert g.fragment_sizes.tolist() == [frags.size - 13, 12, 0, 1]
    assert g.fragment_bboxes.shape == (4, 6)
    assert g.fragment_bboxes[1].tolist() == [1, 0, 3, 3, 2, 6]
    assert g.fragment_bboxes[2].tolist() == [0] * 6
    assert g.fragment_bboxes[3].tolist() == [3, 4, 5, 4, 5, 6]
    assert g.bbox_slices(1) == (slice(1, 3), slice(0, 2), slice(3, 6))
    assert g.n_edges == 0
    np.testing.assert_array_equal(fragment_bboxes(frags, 3), g.fragment_bboxes)


def test_physical_weights_and_scores():
    frags = np.array([[[1, 2]], [[1, 1]]], np.uint64)  # (z=2, y=1, x=2)
    bnd = np.array([[[0.2, 0.6]], [[0.2, 1.0]]], np.float32)
    g = build_region_graph(frags, bnd, (50, 4, 4))
    # one x-face (0.2|0.6 -> 0.4, area 50*4) and one z-face (0.6|1.0 -> 0.8, area 4*4)
    assert g.contact_area.tolist() == [2]
    assert g.contact_weight.tolist() == [200.0 + 16.0]
    assert g.mean_score[0] == pytest.approx((200 * 0.4 + 16 * 0.8) / 216, abs=2e-3)
    g1 = build_region_graph(frags, bnd)
    assert g1.mean_score[0] == pytest.approx(0.6, abs=2e-3)
    assert g1.max_score[0] == pytest.approx(0.8, abs=2e-3)


def test_zero_is_ignored_and_n_fragments_respected():
    frags = np.array([[1, 0, 2], [1, 0, 2]], np.int32)
    g = build_region_graph(frags, np.zeros((2, 3), np.float32), n_fragments=5)
    assert g.n_edges == 0
    assert g.edges.shape == (0, 2)
    assert g.fragment_sizes.shape == (6,)
    assert isinstance(g, RegionGraph)


def test_bad_input_raises():
    bnd = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        build_region_graph(np.ones((3, 4), np.uint64), bnd)
    with pytest.raises(ValueError, match="integer"):
        build_region_graph(np.ones((3, 3), np.float32), bnd)
    with pytest.raises(ValueError, match="non-negative"):
        build_region_graph(-np.ones((3, 3), np.int64), bnd)
    with pytest.raises(ValueError, match="NaN"):
        build_region_graph(np.ones((3, 3), np.uint64), np.full((3, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="smaller"):
        build_region_graph(np.full((3, 3), 4, np.uint64), bnd, n_fragments=2)
    with pytest.raises(ValueError, match="voxel_size"):
        build_region_graph(np.ones((3, 3), np.uint64), bnd, (1, 1, 1))


def _slab_test_volume(shape, per_section, seed):
    """Fragments with many faces per edge, per-section ids or blocks spanning sections."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 9, size=tuple(-(-s // 3) for s in shape))
    frags = coarse.repeat(3, 0).repeat(3, 1)
    if len(shape) == 3:
        frags = frags.repeat(3, 2)
    frags = frags[tuple(slice(0, s) for s in shape)].astype(np.uint64)
    frags[rng.random(shape) < 0.05] = 0  # some unlabelled voxels
    if per_section:  # ids unique per section, as per-section fragments are
        nz = frags.shape[0]
        frags = np.where(
            frags > 0, frags + 9 * np.arange(nz).reshape((nz,) + (1,) * (frags.ndim - 1)), 0
        )
        frags = frags.astype(np.uint64)
    bnd = rng.random(shape, dtype=np.float32)
    return frags, bnd


@pytest.mark.parametrize("shape", [(13, 10, 11), (29, 12)])
@pytest.mark.parametrize("per_section", [True, False])
@pytest.mark.parametrize("voxel_size", [None, (40.0, 5.0, 4.0), (50.0, 4.6, 4.6)])
def test_slabs_match_one_shot_exactly(monkeypatch, shape, per_section, voxel_size):
    from napari_connectome.core import region_graph as rg

    frags, bnd = _slab_test_volume(shape, per_section, seed=len(shape) + per_section)
    vs = None if voxel_size is None else voxel_size[-len(shape) :]
    monkeypatch.setattr(rg, "_SLAB_VOXELS", 0)  # one-shot reference
    ref = build_region_graph(frags, bnd, vs)
    section = int(np.prod(shape[1:]))
    # 1 and 2 sections per slab (several slabs, uneven last one), then a single slab;
    # a small expansion chunk also splits the exact float sums into several chunks
    monkeypatch.setattr(rg, "_EXPAND_FACES", 7)
    for slab in (section, 2 * section, 10**9):
        monkeypatch.setattr(rg, "_SLAB_VOXELS", slab)
        g = build_region_graph(frags, bnd, vs)
        assert g.n_edges > 10
        for field in (
            "edges",
            "contact_area",
            "contact_weight",
            "score_sum",
            "max_score",
            "quantile_score",
            "fragment_sizes",
            "fragment_bboxes",
        ):
            a, b = getattr(g, field), getattr(ref, field)
            assert a.dtype == b.dtype and a.shape == b.shape, field
            assert np.array_equal(a, b), (field, slab)
    assert g.contact_area.max() >= 3  # edges with several faces: the quantile is non-trivial
