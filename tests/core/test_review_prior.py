import numpy as np

from napari_connectome.core.review_prior import MERGE_FEATURES, SPLIT_FEATURES, prior_probability


def features(names, **values):
    return np.array([values.get(n, 0.0) for n in names[:-1]])


def test_merge_prior_falls_with_the_boundary_between_the_segments():
    weak = prior_probability(
        "merge", features(MERGE_FEATURES, mean_score=0.55, max_score=0.6), 0.5
    )
    strong = prior_probability(
        "merge", features(MERGE_FEATURES, mean_score=0.9, max_score=0.95), 0.5
    )
    assert 0.001 <= strong < weak <= 0.999


def test_split_prior_rises_with_the_linkage_across_the_cut():
    shape = {"log_cut": 5.0, "log_small": 8.0, "log_large": 9.0, "log_fragments": 3.0}
    shape["share_below_threshold"] = 1.0
    confident = features(
        SPLIT_FEATURES, link_score=0.1, cut_mean_score=0.1, cut_min_score=0.1, **shape
    )
    doubtful = features(
        SPLIT_FEATURES, link_score=0.45, cut_mean_score=0.45, cut_min_score=0.4, **shape
    )
    assert prior_probability("split", doubtful, 0.5) > prior_probability("split", confident, 0.5)
    pieces = features(
        SPLIT_FEATURES, disconnected=1.0, link_score=1.0, cut_mean_score=1.0, **shape
    )
    assert prior_probability("split", pieces, 0.5) > 0.5  # a segment in two pieces is wrong


def test_unknown_kind_uses_the_fallback():
    assert prior_probability("other", np.zeros(3), 0.25) == 0.25
