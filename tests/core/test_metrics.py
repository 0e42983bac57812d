"""Tests of napari_connectome.core.metrics (VOI and CREMI adapted Rand)."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.metrics import adapted_rand_error as sk_adapted_rand_error
from skimage.metrics import contingency_table as sk_contingency_table
from skimage.metrics import variation_of_information as sk_variation_of_information

from napari_connectome.core import metrics
from napari_connectome.core.metrics import (
    ContingencyTable,
    adapted_rand_error,
    contingency_table,
    evaluate_segmentation,
    variation_of_information,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


# ---------------------------------------------------------------- references
def cremi_adapted_rand_reference(seg, gt, n=None):
    """The cremi package's adapted_rand arithmetic, written out with dense numpy.

    ``n`` is the normaliser of the singleton term: by default the number of
    voxels counted (gt != 0), as in napari_connectome; the cremi package uses
    ``gt.size``. Needs non-negative ids.
    """
    seg_a = np.ravel(seg).astype(np.int64)
    gt_a = np.ravel(gt).astype(np.int64)
    if n is None:
        n = np.count_nonzero(gt_a)
    n_labels_gt = gt_a.max() + 1
    n_labels_seg = seg_a.max() + 1
    p_ij = np.bincount(gt_a * n_labels_seg + seg_a, minlength=n_labels_gt * n_labels_seg)
    p_ij = p_ij.reshape(n_labels_gt, n_labels_seg).astype(np.float64)
    a = p_ij[1:, :]  # truth rows without gt 0, every segment
    b = p_ij[1:, 1:]  # ... without segment 0
    c = p_ij[1:, 0]  # segment-0 voxels inside the truth: singletons
    d = b**2
    a_i = a.sum(axis=1)
    b_i = b.sum(axis=0)
    sum_a = np.sum(a_i * a_i)
    sum_b = np.sum(b_i * b_i) + np.sum(c) / n
    sum_ab = np.sum(d) + np.sum(c) / n
    precision = sum_ab / sum_b
    recall = sum_ab / sum_a
    f_score = 2.0 * precision * recall / (precision + recall)
    return 1.0 - f_score, precision, recall


def skimage_based_adapted_rand(seg, gt):
    """CREMI adapted Rand (error, precision, recall) derived from skimage's numbers.

    skimage counts unordered pairs without self pairs (sum n^2 - N), treats
    segment 0 as one segment, and returns its precision/recall swapped with
    respect to CREMI. Make the singletons explicit, then undo the rest using
    only ground-truth statistics.
    """
    seg = np.asarray(seg).astype(np.int64)
    gt = np.asarray(gt).astype(np.int64)
    foreground = gt != 0
    singles = (seg == 0) & foreground
    c = int(singles.sum())
    explicit = seg.copy()
    explicit[singles] = seg.max() + 1 + np.arange(c)
    _, sk_prec, sk_rec = sk_adapted_rand_error(gt, explicit, ignore_labels=(0,))
    n = int(foreground.sum())
    sizes = np.bincount(gt[foreground]).astype(np.float64)
    sum_gt = float(sizes @ sizes)
    # skimage: sk_prec = (AB_full - N) / (A - N), sk_rec = (AB_full - N) / (B_full - N)
    ab_full = n + sk_prec * (sum_gt - n)
    b_full = n + (ab_full - n) / sk_rec
    sum_ab = ab_full - c + c / n
    sum_b = b_full - c + c / n
    precision = sum_ab / sum_b
    recall = sum_ab / sum_gt
    return 1.0 - 2 * precision * recall / (precision + recall), precision, recall


def skimage_voi(seg, gt):
    split, merge = sk_variation_of_information(gt, seg, ignore_labels=[0])
    return float(split), float(merge)


def check_against_references(seg, gt, tol_sk=1e-6, tol_ref=1e-9):
    scores = evaluate_segmentation(seg, gt)
    split, merge = skimage_voi(seg, gt)
    assert scores["voi_split"] == pytest.approx(split, abs=tol_sk)
    assert scores["voi_merge"] == pytest.approx(merge, abs=tol_sk)
    assert scores["voi"] == pytest.approx(split + merge, abs=tol_sk)
    ours = (scores["arand"], scores["arand_precision"], scores["arand_recall"])
    assert ours == pytest.approx(skimage_based_adapted_rand(seg, gt), abs=tol_sk)
    assert ours == pytest.approx(cremi_adapted_rand_reference(seg, gt), abs=tol_ref)
    return scores


def random_labels(rng, shape, n_labels, dtype=np.int64, low=0):
    return rng.integers(low, low + n_labels, size=shape).astype(dtype)


def entropy_bits(labels):
    sizes = np.bincount(np.ravel(labels)).astype(np.float64)
    p = sizes[sizes > 0] / sizes.sum()
    return float(-(p * np.log2(p)).sum())


# ---------------------------------------------------------------- known cases
def test_identical_segmentations_score_zero():
    rng = np.random.default_rng(0)
    gt = random_labels(rng, (20, 30), 12)
    scores = evaluate_segmentation(gt, gt)
    for key in ("voi_split", "voi_merge", "voi", "arand"):
        assert scores[key] == 0.0
    assert scores["arand_precision"] == 1.0
    assert scores["arand_recall"] == 1.0
    assert scores["n_voxels"] == np.count_nonzero(gt)
    assert scores["n_ground_truth"] == len(np.unique(gt[gt != 0]))


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int64, np.uint64])
def test_permuted_ids_score_zero(dtype):
    rng = np.random.default_rng(1)
    gt = random_labels(rng, (10, 12, 14), 40)
    new_ids = rng.permutation(np.arange(1, 41)).astype(dtype) * dtype(997)
    if dtype == np.uint64:
        new_ids = new_ids + np.uint64(2**63)  # ids beyond the int64 range
    seg = np.concatenate([[dtype(5)], new_ids])[gt]  # gt 0 voxels get some id
    scores = evaluate_segmentation(seg, gt)
    assert scores["voi_split"] == 0.0
    assert scores["voi_merge"] == 0.0
    assert scores["arand"] == pytest.approx(0.0, abs=1e-15)


def test_splitting_every_object_in_two_is_one_bit():
    rng = np.random.default_rng(2)
    gt = np.repeat(rng.permutation(np.arange(1, 21)), 2 * 17).reshape(20, 34)
    half = np.tile(np.repeat([0, 1], 17), 20).reshape(20, 34)
    seg = gt * 2 + half + 1  # each object cut into two equal halves
    split, merge = variation_of_information(seg, gt)
    assert split == 1.0
    assert merge == 0.0
    error, precision, recall = adapted_rand_error(seg, gt)
    assert precision == 1.0
    assert recall == pytest.approx(0.5)
    assert error == pytest.approx(1 - 2 * 0.5 / 1.5)


def test_merging_everything_gives_entropy_of_truth():
    rng = np.random.default_rng(3)
    gt = random_labels(rng, (15, 16, 17), 9)
    seg = np.full(gt.shape, 7, dtype=np.uint8)
    split, merge = variation_of_information(seg, gt)
    assert split == 0.0
    assert merge == pytest.approx(entropy_bits(gt[gt != 0]), abs=1e-12)
    error, precision, recall = adapted_rand_error(seg, gt)
    assert recall == 1.0
    sizes = np.bincount(gt[gt != 0])
    assert precision == pytest.approx((sizes @ sizes) / np.count_nonzero(gt) ** 2)


def test_ground_truth_zero_voxels_do_not_matter():
    rng = np.random.default_rng(4)
    gt = random_labels(rng, (30, 40), 6)
    seg = random_labels(rng, (30, 40), 8)
    other = seg.copy()
    background = gt == 0
    other[background] = rng.integers(0, 1000, size=background.sum())
    assert evaluate_segmentation(seg, gt) == evaluate_segmentation(other, gt)


def test_segment_zero_voxels_are_singletons_in_adapted_rand_only():
    rng = np.random.default_rng(5)
    gt = random_labels(rng, (25, 25), 5, low=1)
    seg = random_labels(rng, (25, 25), 4, low=1)
    seg[:5] = 0  # 125 voxels without a segment
    error, precision, recall = adapted_rand_error(seg, gt)
    assert (error, precision, recall) == pytest.approx(
        cremi_adapted_rand_reference(seg, gt), abs=1e-12
    )
    # Hand-computed: segment 0 adds c / N to both B and AB.
    table = contingency_table(seg, gt)
    dense = table.to_dense()
    n = table.n_voxels
    c = dense[0].sum()
    assert table.segmentation_ids[0] == 0 and c == 125
    sum_ab = (dense[1:] ** 2).sum() + c / n
    sum_b = (dense[1:].sum(axis=1) ** 2).sum() + c / n
    assert precision == pytest.approx(sum_ab / sum_b, rel=1e-14)
    # Renaming segment 0 to a fresh id turns the singletons into one segment:
    # the adapted Rand changes, the VOI (which treats 0 as a segment) does not.
    renamed = np.where(seg == 0, 99, seg)
    assert adapted_rand_error(renamed, gt)[1] < precision
    assert variation_of_information(renamed, gt) == pytest.approx(
        variation_of_information(seg, gt), abs=1e-12
    )
    # A segmentation that is 0 over the whole foreground: nothing is joined.
    error, precision, recall = adapted_rand_error(np.zeros_like(seg), gt)
    assert precision == 1.0
    assert recall == pytest.approx(1.0 / (np.bincount(gt.ravel()) ** 2).sum())


def test_cremi_normaliser_differs_negligibly():
    rng = np.random.default_rng(6)
    gt = random_labels(rng, (40, 50), 7)  # includes gt 0
    seg = random_labels(rng, (40, 50), 9)  # includes seg 0 inside the truth
    ours = np.array(adapted_rand_error(seg, gt))
    cremi_exact = np.array(cremi_adapted_rand_reference(seg, gt, n=gt.size))
    n = np.count_nonzero(gt)
    assert not np.array_equal(ours, cremi_exact)
    assert np.abs(ours - cremi_exact).max() < 1.0 / n


# ---------------------------------------------------------------- cross-checks
@pytest.mark.parametrize(
    ("shape", "dtype", "n_seg", "n_gt"),
    [
        ((200,), np.int64, 7, 5),
        ((30, 40), np.uint8, 12, 6),
        ((30, 40), np.int16, 300, 40),
        ((12, 13, 14), np.uint32, 50, 20),
        ((12, 13, 14), np.uint64, 500, 90),
        ((5, 6, 7, 8), np.int32, 25, 10),
        ((40, 50), np.int8, 100, 100),
    ],
)
def test_matches_skimage_and_reference_on_random_labels(shape, dtype, n_seg, n_gt):
    rng = np.random.default_rng(hash((shape, n_seg)) % 2**32)
    gt = random_labels(rng, shape, n_gt, dtype)
    seg = random_labels(rng, shape, n_seg, dtype)
    check_against_references(seg, gt)


def test_matches_skimage_on_blobs_with_merges_and_splits():
    rng = np.random.default_rng(7)
    seeds = np.zeros((40, 40, 40), dtype=np.int64)
    seeds[tuple(rng.integers(0, 40, (3, 60)))] = np.arange(1, 61)
    _, indices = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    gt = seeds[tuple(indices)]
    seg = np.roll(gt, 2, axis=0) * 3 + (rng.random(gt.shape) < 0.3)  # shift, split, noise
    seg[gt % 5 == 0] = 1000  # a false merge
    gt[:, :3] = 0
    seg[:2] = 0
    check_against_references(seg, gt)


def test_table_matches_skimage_contingency_table():
    rng = np.random.default_rng(8)
    gt = random_labels(rng, (30, 30), 8)
    seg = random_labels(rng, (30, 30), 11)
    table = contingency_table(seg, gt)
    reference = sk_contingency_table(gt, seg).toarray().T  # skimage: truth rows
    reference = reference[np.ix_(table.segmentation_ids, table.ground_truth_ids)]
    assert np.array_equal(table.to_dense(), reference)
    assert np.array_equal(table.to_sparse().toarray(), reference)
    assert table.ground_truth_ids.tolist() == list(range(1, 8))
    assert table.segmentation_ids.tolist() == list(range(11))
    assert table.n_voxels == np.count_nonzero(gt)
    assert table.shape == (11, 7)
    assert np.array_equal(table.segmentation_sizes, reference.sum(axis=1))
    assert np.array_equal(table.ground_truth_sizes, reference.sum(axis=0))
    order = table.rows * table.shape[1] + table.cols
    assert np.all(np.diff(order) > 0) and np.all(table.counts > 0)
    with pytest.raises(ValueError):
        table.counts[0] = 5


def test_counting_paths_agree(monkeypatch):
    rng = np.random.default_rng(9)
    gt = random_labels(rng, (20, 20, 20), 30)
    seg = random_labels(rng, (20, 20, 20), 200, low=-50)
    expected = contingency_table(seg, gt)  # dense histogram path
    monkeypatch.setattr(metrics, "_MIN_BINS", 0)
    monkeypatch.setattr(metrics, "_MAX_BINS", 0)
    sorted_path = contingency_table(seg, gt)  # one sort of the pair keys
    monkeypatch.undo()
    spread = seg.astype(np.int64) * 2**50  # forces ranking of segmentation ids
    wide_gt = gt.astype(np.uint64) * np.uint64(2**59)  # both too wide: rank both
    spread_table = contingency_table(spread, gt)
    both_table = contingency_table(spread, wide_gt)
    for table in (sorted_path, spread_table, both_table):
        assert np.array_equal(table.rows, expected.rows)
        assert np.array_equal(table.cols, expected.cols)
        assert np.array_equal(table.counts, expected.counts)
    assert np.array_equal(spread_table.segmentation_ids, expected.segmentation_ids * 2**50)
    assert both_table.ground_truth_ids.dtype == np.uint64
    extremes = np.array([np.iinfo(np.int64).min, -1, 0, 5, np.iinfo(np.int64).max])
    table = contingency_table(extremes, np.array([1, 1, 2, 2, 2]))
    assert table.segmentation_ids.tolist() == extremes.tolist()
    assert table.to_dense().tolist() == [[1, 0], [1, 0], [0, 1], [0, 1], [0, 1]]


def test_table_argument_and_evaluate_agree():
    rng = np.random.default_rng(10)
    gt = random_labels(rng, (20, 30), 6)
    seg = random_labels(rng, (20, 30), 9)
    table = contingency_table(seg, gt)
    assert isinstance(table, ContingencyTable)
    scores = evaluate_segmentation(seg, gt)
    assert variation_of_information(None, None, table=table) == (
        scores["voi_split"],
        scores["voi_merge"],
    )
    assert adapted_rand_error(seg, gt, table=table) == (
        scores["arand"],
        scores["arand_precision"],
        scores["arand_recall"],
    )
    assert scores["n_segments"] == len(np.unique(seg[gt != 0]))
    assert json.loads(json.dumps(scores)) == scores
    assert all(type(scores[k]) is float for k in ("voi", "arand", "arand_recall"))
    assert all(type(scores[k]) is int for k in ("n_voxels", "n_segments", "n_ground_truth"))
    with pytest.raises(TypeError, match="ContingencyTable"):
        adapted_rand_error(seg, gt, table=table.to_sparse())


def test_inputs_untouched_and_views_accepted():
    rng = np.random.default_rng(11)
    gt = random_labels(rng, (30, 20, 10), 6)
    seg = random_labels(rng, (30, 20, 10), 9, low=3)
    gt_copy, seg_copy = gt.copy(), seg.copy()
    expected = evaluate_segmentation(seg, gt)
    assert np.array_equal(gt, gt_copy) and np.array_equal(seg, seg_copy)
    assert evaluate_segmentation(seg.T.copy().T, np.asfortranarray(gt)) == expected
    assert evaluate_segmentation(seg[::-1][::-1], gt.tolist()) == expected


def test_ignore_ground_truth_option():
    gt = np.array([0, 0, 1, 1, -1, -1])
    seg = np.array([1, 2, 1, 1, 3, 3])
    assert contingency_table(seg, gt).n_voxels == 4
    assert contingency_table(seg, gt, ignore_ground_truth=()).n_voxels == 6
    table = contingency_table(seg, gt, ignore_ground_truth=[0, -1])
    assert table.n_voxels == 2 and table.ignore_ground_truth == (-1, 0)
    unsigned = contingency_table(seg, gt.astype(np.uint8), ignore_ground_truth=(-1, 0))
    assert unsigned.n_voxels == 4


# ---------------------------------------------------------------- input handling
def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        evaluate_segmentation(np.ones((4, 5), int), np.ones((5, 4), int))


def test_empty_ground_truth_is_rejected():
    with pytest.raises(ValueError, match="ground truth has no labelled voxels"):
        evaluate_segmentation(np.ones((4, 5), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="ground truth has no labelled voxels"):
        evaluate_segmentation(np.ones((0, 5), int), np.ones((0, 5), int))


def test_float_and_bool_inputs():
    rng = np.random.default_rng(12)
    gt = random_labels(rng, (10, 10), 5)
    seg = random_labels(rng, (10, 10), 5)
    expected = evaluate_segmentation(seg, gt)
    assert evaluate_segmentation(seg.astype(np.float32), gt.astype(np.float64)) == expected
    with pytest.raises(ValueError, match="non-integer"):
        evaluate_segmentation(seg + 0.5, gt)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_segmentation(seg, np.where(gt == 1, np.nan, gt))
    with pytest.raises(TypeError, match="integer"):
        evaluate_segmentation(seg.astype(complex), gt)
    with pytest.raises(TypeError, match="integer"):
        evaluate_segmentation(seg.astype(str), gt)
    as_bool = evaluate_segmentation(seg > 2, gt)
    assert as_bool == evaluate_segmentation((seg > 2).astype(np.uint8), gt)


def test_negative_ids_are_ordinary_labels():
    rng = np.random.default_rng(13)
    gt = random_labels(rng, (20, 20), 6)
    seg = random_labels(rng, (20, 20), 6)
    # A bijection that keeps 0 (seg singletons, gt ignore) and makes others negative.
    neg_seg = np.where(seg == 0, 0, -seg - 100)
    neg_gt = np.where(gt == 0, 0, -3 * gt)
    assert evaluate_segmentation(neg_seg, neg_gt) == pytest.approx(
        evaluate_segmentation(seg, gt), abs=1e-12
    )
    assert contingency_table(neg_seg, neg_gt).segmentation_ids.min() < 0


# ---------------------------------------------------------------- real data
def _load(name):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real data {path} not available")
    return np.load(path)


def test_real_isbi_sectionwise_components():
    data = _load("isbi2012_cardona_3d.npz")
    gt = data["labels_cc"]
    boundary = ndi.binary_dilation(
        data["membranes"].astype(bool), structure=ndi.generate_binary_structure(2, 1)[None]
    )
    seg = np.zeros(gt.shape, dtype=np.uint32)
    offset = 0
    for z in range(gt.shape[0]):  # 2D components: split in z, merges through gaps
        labels, n = ndi.label(~boundary[z])
        seg[z] = np.where(labels > 0, labels + offset, 0)
        offset += n
    assert np.count_nonzero((seg == 0) & (gt != 0)) > 0  # singletons exercised
    scores = check_against_references(seg, gt)
    assert scores["voi_split"] > 1.0  # every object cut into sections
    assert 0.0 < scores["arand"] < 1.0
    # The cremi package's own normaliser (whole array) changes nothing visible.
    cremi_exact = cremi_adapted_rand_reference(seg, gt, n=gt.size)
    assert scores["arand"] == pytest.approx(cremi_exact[0], abs=1e-9)


def test_real_gala_watershed():
    data = _load("gala_fib_train.npz")
    gt = data["labels"]
    smooth = ndi.gaussian_filter(data["raw"].astype(np.float32), 1.0)
    from skimage.segmentation import watershed

    peaks = (smooth == ndi.maximum_filter(smooth, size=7)) & (smooth > np.median(smooth))
    markers, _ = ndi.label(peaks)
    seg = watershed((255 - smooth).astype(np.uint8), markers)
    seg[smooth < np.percentile(smooth, 10)] = 0  # darkest voxels left unlabelled
    assert np.count_nonzero((seg == 0) & (gt != 0)) > 0
    scores = check_against_references(seg, gt)
    assert scores["voi_split"] > 0.1 and scores["voi_merge"] > 0.01
    assert scores["n_ground_truth"] == len(np.unique(gt[gt != 0]))
