import numpy as np

from napari_connectome.core.review_candidates import CandidateConfig
from napari_connectome.core.review_cuts import propose_cuts, spectral_cut


def test_spectral_cut_finds_a_thin_bridge_and_refuses_small_or_split_graphs():
    iu = np.array([0, 0, 1, 3, 3, 4, 2])
    iv = np.array([1, 2, 2, 4, 5, 5, 3])
    w = np.array([5, 5, 5, 5, 5, 5, 0.2])
    side = spectral_cut(6, iu, iv, w)
    assert sorted(np.flatnonzero(side).tolist()) in ([0, 1, 2], [3, 4, 5])
    assert spectral_cut(2, [0], [1], [1.0]) is None
    assert spectral_cut(4, [0, 2], [1, 3], [1.0, 1.0]) is None  # two components


def chain(k, weak):
    """A chain of k nodes, every link confident (score 0.1) but the one after node ``weak``."""
    iu, iv = np.arange(k - 1), np.arange(1, k)
    score = np.full(k - 1, 0.1)
    score[weak] = 0.45
    return iu, iv, np.ones(k - 1), score


def test_dendrogram_cuts_are_partitions_and_include_the_weak_link():
    k = 8
    iu, iv, w, score = chain(k, 3)
    sizes = np.full(k, 100)
    cuts = propose_cuts(k, iu, iv, w, score, w, sizes, CandidateConfig(), lambda s: s)
    assert cuts
    for _, a, b, source in cuts:
        assert source in ("tree", "spectral")
        assert not set(a) & set(b) and set(a) | set(b) <= set(range(1, k + 1))
    tree = [(set(a), set(b)) for _, a, b, src in cuts if src == "tree"]
    halves = ({1, 2, 3, 4}, {5, 6, 7, 8})
    assert any({frozenset(a), frozenset(b)} == {frozenset(h) for h in halves} for a, b in tree)
    last = [c for c in cuts if c[3] == "tree"][-1]
    assert last[0] == max(c[0] for c in cuts if c[3] == "tree") == 0.45


def test_disconnected_segment_is_cut_into_its_pieces_and_depth_is_limited():
    k = 6
    iu, iv = np.array([0, 1, 3, 4]), np.array([1, 2, 4, 5])  # two chains of three
    w, score = np.ones(4), np.full(4, 0.2)
    cuts = propose_cuts(k, iu, iv, w, score, w, np.full(k, 50), CandidateConfig(), lambda s: s)
    pieces = [c for c in cuts if c[3] == "components"]
    assert len(pieces) == 1 and {frozenset(pieces[0][1]), frozenset(pieces[0][2])} == {
        frozenset({1, 2, 3}),
        frozenset({4, 5, 6}),
    }
    few = propose_cuts(
        20,
        *chain(20, 9)[:2],
        np.ones(19),
        chain(20, 9)[3],
        np.ones(19),
        np.full(20, 100),
        CandidateConfig(split_depth=2, spectral=False),
        lambda s: s,
    )
    assert len(few) == 2
