from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_connectome.core.agglomeration import (
    MergeTree,
    agglomerate,
    apply_table,
    edge_merge_scores,
    section_links,
    segment_boundaries,
    segment_table,
)
from napari_connectome.core.region_graph import RegionGraph, build_region_graph

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "isbi2012_cardona_3d.npz"


def three_blobs(seed=0, shape=(2, 60, 90), noise=0.05):
    """Three cells separated by vertical membrane bands, with a faint interior texture."""
    rng = np.random.default_rng(seed)
    truth = np.ones(shape, np.int64)
    truth[..., 30:] = 2
    truth[..., 60:] = 3
    membrane = np.zeros(shape, bool)
    for x in (30, 60):
        membrane[..., x - 1 : x + 1] = True
    truth[membrane] = 0
    bnd = ndi.gaussian_filter(membrane.astype(np.float32), (0, 1, 1)) * 1.6
    bnd += rng.normal(0, noise, shape).astype(np.float32)
    return truth, np.clip(bnd, 0, 1).astype(np.float32)


def random_graph(n, n_edges, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.integers(1, n + 1, n_edges)
    v = rng.integers(1, n + 1, n_edges)
    keep = u != v
    e = np.unique(np.sort(np.stack([u[keep], v[keep]], 1), axis=1), axis=0).astype(np.uint64)
    m = len(e)
    area = rng.integers(1, 20, m)
    weight = area.astype(float)
    return RegionGraph(
        edges=e,
        contact_area=area,
        contact_weight=weight,
        score_sum=rng.random(m) * weight,
        max_score=np.ones(m, np.float32),
        quantile_score=np.ones(m, np.float32),
        fragment_sizes=np.ones(n + 1, np.int64),
        fragment_bboxes=np.zeros((n + 1, 6), np.int64),
    )


def brute_force_agglomerate(graph):
    """Naive average linkage: recompute every region-pair score from fragment edges."""
    n = graph.n_fragments
    region = list(range(n + 1))
    merges = []
    edges = graph.edges.astype(int).tolist()
    while True:
        acc = {}
        for (u, v), s, w in zip(edges, graph.score_sum, graph.contact_weight, strict=True):
            a, b = sorted((region[u], region[v]))
            if a != b:
                rec = acc.setdefault((a, b), [0.0, 0.0])
                rec[0] += s
                rec[1] += w
        if not acc:
            return merges
        (a, b), (s, w) = min(acc.items(), key=lambda kv: kv[1][0] / kv[1][1])
        merges.append(s / w)
        region = [a if r == b else r for r in region]


def replay(tree, n, threshold):
    """Python union-find replay of the merge prefix; partition as a set of frozensets."""
    parent = list(range(n + 1))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b, s in zip(tree.merge_a, tree.merge_b, tree.merge_score, strict=True):
        if s <= threshold:
            parent[find(int(b))] = find(int(a))
    groups = {}
    for f in range(1, n + 1):
        groups.setdefault(find(f), set()).add(f)
    return {frozenset(g) for g in groups.values()}


def partition(table):
    groups = {}
    for f in range(1, len(table)):
        groups.setdefault(int(table[f]), set()).add(f)
    return {frozenset(g) for g in groups.values()}


def test_average_linkage_matches_brute_force():
    g = random_graph(40, 90, seed=1)
    tree = agglomerate(g)
    np.testing.assert_allclose(tree.merge_score, brute_force_agglomerate(g), rtol=1e-12)
    assert np.all(np.diff(tree.merge_score) >= 0)
    assert np.all(tree.merge_a < tree.merge_b)


def test_segment_table_matches_replay_and_is_monotone():
    g = random_graph(60, 150, seed=2)
    tree = agglomerate(g)
    n = g.n_fragments
    counts = []
    for t in [-np.inf, *np.linspace(0, 1, 23), np.inf]:
        table = segment_table(tree, n, t)
        assert table[0] == 0
        assert table.dtype == np.uint32
        assert partition(table) == replay(tree, n, t)
        # consecutive ids ordered by the smallest fragment id of each segment
        firsts = [min(s) for s in partition(table)]
        assert sorted(int(table[f]) for f in firsts) == list(range(1, len(firsts) + 1))
        assert [int(table[f]) for f in sorted(firsts)] == list(range(1, len(firsts) + 1))
        counts.append(int(table.max()))
    assert counts[0] == n
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))


def test_hand_computed_merge_order():
    # chain 1-2-3 plus 3-4: scores 0.1, 0.3, 0.9 (areas 1, 1, 3)
    g = random_graph(4, 0)
    g.edges = np.array([[1, 2], [2, 3], [3, 4]], np.uint64)
    g.contact_area = np.array([1, 1, 3])
    g.contact_weight = np.array([1.0, 1.0, 3.0])
    g.score_sum = np.array([0.1, 0.3, 2.7])
    tree = agglomerate(g)
    assert tree.merge_a.tolist() == [1, 1, 1]
    assert tree.merge_b.tolist() == [2, 3, 4]
    np.testing.assert_allclose(tree.merge_score, [0.1, 0.3, 0.9])
    assert tree.n_merges(0.3) == 2
    assert segment_table(tree, 4, 0.2).tolist() == [0, 1, 1, 2, 3]
    # extra fragments beyond the graph stay singletons
    assert segment_table(tree, 6, 0.5).tolist() == [0, 1, 1, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="n_fragments"):
        segment_table(tree, 3, 0.5)


def test_graph_without_edges():
    g = random_graph(3, 0)
    tree = agglomerate(g)
    assert len(tree) == 0
    assert tree.table(np.inf).tolist() == [0, 1, 2, 3]


def test_three_blobs_thresholds():
    truth, bnd = three_blobs()
    frags, graph, tree, seg = segment_boundaries(bnd, (50, 4, 4), threshold=0.5)
    n = graph.n_fragments
    assert n == frags.max()
    inplane = np.zeros((3, 3, 3), bool)
    inplane[1] = ndi.generate_binary_structure(2, 1)
    inner = ndi.binary_erosion(truth > 0, inplane, iterations=2)
    assert inner.sum() > 0.8 * (truth > 0).sum()
    for t in (0.3, 0.5):
        seg = apply_table(segment_table(tree, n, t), frags)
        # objects kept apart and each object one segment
        pairs = np.unique(np.stack([seg[inner], truth[inner]], 1), axis=0)
        assert len(pairs) == 3, t
        assert len(np.unique(pairs[:, 0])) == 3
    everything = apply_table(segment_table(tree, n, 1.0), frags)
    assert np.unique(everything).tolist() == [1]
    assert apply_table(segment_table(tree, n, -1.0), frags).max() == n


def test_segment_boundaries_2d_mask_and_determinism():
    truth, bnd = three_blobs(shape=(1, 50, 90))
    bnd2 = bnd[0]
    mask = np.ones(bnd2.shape, bool)
    mask[:, :10] = False
    f1, g1, t1, s1 = segment_boundaries(bnd2, (4, 4), mask=mask)
    f2, g2, t2, s2 = segment_boundaries(bnd2, (4, 4), mask=mask)
    assert s1.dtype == np.uint32 and s1.shape == bnd2.shape
    assert np.all(s1[~mask] == 0) and np.all(s1[mask] > 0)
    assert len(np.unique(s1[mask])) == 3
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(t1.merge_a, t2.merge_a)
    np.testing.assert_array_equal(t1.merge_score, t2.merge_score)


def test_apply_table_dtypes():
    frags = np.array([[0, 1], [2, 3]], np.uint64)
    table = np.array([0, 5, 5, 7], np.uint64)
    out = apply_table(table, frags)
    assert out.dtype == np.uint32
    assert out.tolist() == [[0, 5], [5, 7]]
    big = np.array([0, 2**40, 1, 1], np.uint64)
    assert apply_table(big, frags).dtype == np.uint64


def test_segment_table_is_fast_for_100k_fragments():
    n = 100_000
    rng = np.random.default_rng(3)
    order = rng.permutation(n) + 1
    # a random spanning forest in merge order: b merges into a smaller id
    b = order[order > 1]
    a = rng.integers(1, b)
    tree = MergeTree(
        a.astype(np.uint64),
        b.astype(np.uint64),
        np.sort(rng.random(len(a))),
        np.ones(len(a)),
        n,
    )
    table = segment_table(tree, n, 0.5)
    assert table.max() == n - tree.n_merges(0.5)  # speed: benchmarks/agglomeration.py


def test_bad_input_raises():
    with pytest.raises(ValueError, match="NaN"):
        segment_boundaries(np.full((4, 4), np.nan, np.float32), (4, 4))
    with pytest.raises(ValueError, match="2D"):
        segment_boundaries(np.zeros(5, np.float32), (4,))
    g = random_graph(5, 8)
    g.contact_weight = np.zeros(g.n_edges)
    with pytest.raises(ValueError, match="positive"):
        agglomerate(g)


def test_real_data_crop():
    if not DATA.exists():
        pytest.skip(f"{DATA} not found")
    with np.load(DATA) as d:
        membranes = d["membranes"][:10, :256, :256]
        truth = d["labels_cc"][:10, :256, :256]
    assert np.all(truth[membranes == 1] == 0)  # 1 = membrane
    rng = np.random.default_rng(0)
    bnd = ndi.gaussian_filter(membranes.astype(np.float32), (0, 1, 1))
    bnd = np.clip(bnd + rng.normal(0, 0.1, bnd.shape), 0, 1).astype(np.float32)
    frags, graph, tree, seg = segment_boundaries(bnd, (50, 4, 4))

    # fragments over-segment: voxel-weighted purity against the truth
    sel = truth > 0
    f, t = frags[sel].astype(np.int64), truth[sel].astype(np.int64)
    counts = np.bincount(f * (t.max() + 1) + t)
    best = np.zeros(graph.n_fragments + 1)
    np.maximum.at(best, np.flatnonzero(counts) // (t.max() + 1), counts[counts > 0])
    assert best.sum() / sel.sum() > 0.95

    try:
        from napari_connectome.core.metrics import evaluate_segmentation
    except ImportError:
        evaluate_segmentation = None
    if evaluate_segmentation is not None:
        assert evaluate_segmentation(seg, truth)["arand"] < 0.2
    else:  # most truth voxels land in their object's main segment
        pairs = np.bincount(seg[sel].astype(np.int64) * (t.max() + 1) + t)
        main = np.zeros(t.max() + 1)
        np.maximum.at(main, np.flatnonzero(pairs) % (t.max() + 1), pairs[pairs > 0])
        assert main.sum() / sel.sum() > 0.8


def moving_membrane(shift=8, nz=2, height=24, width=64):
    """Two cells split by a membrane that moves ``shift`` px per section (exact 2D pieces)."""
    frags = np.zeros((nz, height, width), np.uint64)
    bnd = np.zeros(frags.shape, np.float32)
    for z in range(nz):
        x = width // 2 + shift * z
        frags[z, :, :x] = 2 * z + 1
        frags[z, :, x:] = 2 * z + 2
        bnd[z, :, x - 1 : x + 1] = 1.0
    bnd = ndi.gaussian_filter(bnd, (0, 1, 1))
    return frags, np.clip(bnd / bnd.max(), 0, 1).astype(np.float32)


def test_sliver_between_sections_scores_high_big_overlap_low():
    frags, bnd = moving_membrane(shift=8)
    g = build_region_graph(frags, bnd, (50, 4, 4))
    edges = [tuple(e) for e in g.edges.tolist()]
    links = section_links(g)
    assert [edges[i] for i in np.flatnonzero(links)] == [(1, 3), (2, 3), (2, 4)]
    scores = edge_merge_scores(g)
    mean = g.mean_score
    sliver = edges.index((2, 3))  # cell 2 in section 0 meets cell 1's 8 px sliver in section 1
    assert mean[sliver] < 0.2  # both faces interior: the boundary mean cannot tell
    assert scores[sliver] > 0.6
    for big in (edges.index((1, 3)), edges.index((2, 4))):
        assert scores[big] == pytest.approx(mean[big])  # large overlap: plain boundary mean
        assert scores[big] < 0.2
    # in-plane contacts are unchanged
    for i in np.flatnonzero(~links):
        assert scores[i] == pytest.approx(mean[i])
    # a wider sliver is a larger overlap: lower score
    g2 = build_region_graph(*moving_membrane(shift=16), (50, 4, 4))
    wide = [tuple(e) for e in g2.edges.tolist()].index((2, 3))
    assert edge_merge_scores(g2)[wide] < scores[sliver]
    np.testing.assert_array_equal(edge_merge_scores(g, z_overlap=None), mean)


def test_sliver_overlap_does_not_merge_two_objects():
    # fragments 1, 2 in section 0 and 3, 4 in section 1, 400 voxels each; 2-3 is
    # a sliver (20 voxels) with the lowest boundary mean of all contacts
    g = random_graph(4, 0)
    g.edges = np.array([[1, 2], [1, 3], [2, 3], [2, 4], [3, 4]], np.uint64)
    g.contact_area = np.array([20, 380, 20, 300, 20])
    g.contact_weight = np.array([4000.0, 6080, 320, 4800, 4000])
    mean = np.array([0.9, 0.05, 0.02, 0.05, 0.9])
    g.score_sum = mean * g.contact_weight
    g.fragment_sizes = np.array([0, 400, 400, 400, 400])
    g.fragment_bboxes = np.array(
        [[0] * 6, [0, 0, 0, 1, 20, 20], [0, 0, 20, 1, 20, 40], [1, 0, 0, 2, 20, 20],
         [1, 0, 20, 2, 20, 40]]
    )  # fmt: skip
    plain = agglomerate(g, z_overlap=None)
    assert plain.merge_score[0] == pytest.approx(0.02)  # the sliver merges first
    assert segment_table(plain, 4, 0.5).max() == 1  # and joins the two objects
    tree = agglomerate(g)
    assert segment_table(tree, 4, 0.5).tolist() == [0, 1, 2, 1, 2]
    assert np.all(np.diff(tree.merge_score) >= 0)
    assert np.all((tree.merge_score >= 0) & (tree.merge_score <= 1))
    with pytest.raises(ValueError, match="z_overlap"):
        agglomerate(g, z_overlap=-1.0)
    with pytest.raises(ValueError, match="section_threshold"):
        agglomerate(g, section_threshold=2.0)


def test_section_links_need_2d_fragments():
    frags, bnd = moving_membrane()
    g = build_region_graph(frags, bnd, (50, 4, 4))
    assert section_links(g).sum() == 3
    # 3D fragments (isotropic data): no between-section term
    frags3d = frags.copy()
    frags3d[frags3d == 3] = 1
    frags3d[frags3d == 4] = 2
    g3 = build_region_graph(frags3d, bnd, (8, 8, 8))
    assert not section_links(g3).any()
    np.testing.assert_array_equal(edge_merge_scores(g3), g3.mean_score)
    # 2D graphs have no sections
    g2 = build_region_graph(frags[0], bnd[0], (4, 4))
    assert not section_links(g2).any()
