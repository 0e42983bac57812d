r"""Segmentation accuracy metrics for connectomics (CREMI convention).

Every metric here is computed from one sparse contingency table: the number of
voxels for each (segmentation id, ground-truth id) pair, with the voxels whose
ground-truth label is ignored (label 0 by default, the membrane / unlabelled
class) left out. :func:`evaluate_segmentation` builds the table once and
derives all scores from it.

Conventions
-----------
Let :math:`n_{ij}` be the number of counted voxels with segmentation id
:math:`i` and ground-truth id :math:`j`, :math:`s_i = \sum_j n_{ij}` the
segment sizes, :math:`t_j = \sum_i n_{ij}` the ground-truth object sizes and
:math:`N = \sum_{ij} n_{ij}` the number of counted voxels (ground truth not
ignored).

Variation of information (Meila 2007), in bits (log base 2), as in CREMI's
``voi`` and scikit-image's ``variation_of_information``:

- ``voi_split`` :math:`= H(S|G) = -\sum_{ij} \frac{n_{ij}}{N} \log_2
  \frac{n_{ij}}{t_j}`, false splits (oversegmentation);
- ``voi_merge`` :math:`= H(G|S) = -\sum_{ij} \frac{n_{ij}}{N} \log_2
  \frac{n_{ij}}{s_i}`, false merges (undersegmentation);
- ``voi`` = split + merge.

Segmentation id 0 is an ordinary segment for the VOI (CREMI passes no ignore
list for the segmentation either).

Adapted Rand error, the arithmetic of the ``cremi`` package's ``adapted_rand``
(taken from the SNEMI3D MATLAB script): segmentation voxels with id 0 inside
the ground-truth foreground are *singletons*, each its own segment. With
:math:`c = \sum_j n_{0j}` those voxels,

.. math::

    A = \sum_j t_j^2, \qquad
    B = \sum_{i \neq 0} s_i^2 + c / N, \qquad
    AB = \sum_{i \neq 0,\, j} n_{ij}^2 + c / N,

    \text{precision} = AB / B, \quad \text{recall} = AB / A, \quad
    \text{error} = 1 - \frac{2 \cdot \text{precision} \cdot \text{recall}}
    {\text{precision} + \text{recall}}.

Pairs are ordered and include self pairs (sums of squared sizes). Precision is
the fraction of voxel pairs joined by the segmentation that the truth also
joins (hurt by false merges); recall the fraction of pairs joined by the truth
that the segmentation also joins (hurt by false splits).

Differences to other implementations
------------------------------------
- ``cremi`` package: its ``n`` in the ``c / n`` singleton term is the size of
  the whole array, ground-truth 0 voxels included; here it is :math:`N`, the
  voxels counted. The term is at most 1 against sums of squares of at least
  :math:`N` (unless the segmentation is 0 over all the foreground), so the two
  differ by less than :math:`1/N` relative. (The ``c / n`` term itself is a
  known oddity of the original script, cremi_python issue #3; a singleton
  "should" contribute 1. It is reproduced as is.) The ``cremi`` package also
  needs non-negative ids; any integer ids work here.
- scikit-image ``variation_of_information(gt, seg, ignore_labels=[0])``
  returns ``[voi_split, voi_merge]``, same base and definition; the ignore
  list applies to its *first* argument only.
- scikit-image ``adapted_rand_error(gt, seg)`` counts unordered pairs without
  self pairs (:math:`\sum n^2 - N` instead of :math:`\sum n^2`), treats
  segmentation id 0 as one ordinary segment (no singletons), and its returned
  ``precision`` divides by the *ground-truth* pairs and ``recall`` by the
  segmentation pairs, i.e. they are this module's recall and precision
  swapped (scikit-image issue #6485). Its error uses the same harmonic mean.

Input
-----
Label arrays of any shape (2D, 3D, nD), equal shapes, any integer dtype or
bool; negative ids are allowed and are ordinary labels (only the ids listed
in ``ignore_ground_truth`` are ignored, and only segmentation id 0 is treated
as singletons by the adapted Rand error). Float arrays are accepted when every
value is a finite integer; anything else raises ``TypeError`` or
``ValueError``.

Speed
-----
The table is built without relabelling the volume: both arrays are offset to
start at 0 and combined into one 64-bit key per voxel, counted with
``np.bincount`` when the product of the id ranges is small and with a single
sort (``np.unique``) otherwise. Only ids with a range too wide for a 64-bit
key (e.g. random 64-bit ids) are first compacted by a sort.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ContingencyTable",
    "adapted_rand_error",
    "contingency_table",
    "evaluate_segmentation",
    "variation_of_information",
]

# Largest dense histogram used for counting pairs (int64 entries): beyond this
# the per-voxel keys are sorted instead.
_MAX_BINS = 1 << 24
_MIN_BINS = 1 << 20
_KEY_LIMIT = 1 << 62


@dataclass(frozen=True, eq=False)
class ContingencyTable:
    """Sparse voxel-overlap counts, segmentation rows by ground-truth columns.

    Entry ``k`` says that ``counts[k]`` voxels have segmentation id
    ``segmentation_ids[rows[k]]`` and ground-truth id
    ``ground_truth_ids[cols[k]]``. Only non-zero entries are stored, sorted by
    row then column. Voxels whose ground-truth id is in
    ``ignore_ground_truth`` are not counted. Build it with
    :func:`contingency_table`; arrays are read-only.

    Parameters
    ----------
    segmentation_ids : numpy.ndarray
        Sorted distinct segmentation ids present in the counted voxels (the
        rows), in the segmentation's dtype (bool becomes uint8, integer-valued
        float becomes int64).
    ground_truth_ids : numpy.ndarray
        Sorted distinct ground-truth ids counted (the columns).
    rows, cols : numpy.ndarray of int64
        Row and column index of each non-zero entry.
    counts : numpy.ndarray of int64
        Voxel count of each entry, all positive.
    ignore_ground_truth : tuple of int
        The ground-truth ids that were left out.

    Examples
    --------
    >>> import numpy as np
    >>> seg = np.array([[1, 1, 2], [2, 2, 0]])
    >>> gt = np.array([[5, 5, 5], [0, 7, 7]])
    >>> table = contingency_table(seg, gt)
    >>> table.to_dense().tolist()
    [[0, 1], [2, 0], [1, 1]]
    >>> table.segmentation_ids.tolist(), table.ground_truth_ids.tolist()
    ([0, 1, 2], [5, 7])
    >>> table.n_voxels
    5
    """

    segmentation_ids: np.ndarray
    ground_truth_ids: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    counts: np.ndarray
    ignore_ground_truth: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        n = len(self.counts)
        if len(self.rows) != n or len(self.cols) != n:
            raise ValueError("rows, cols and counts must have the same length")
        for name in ("segmentation_ids", "ground_truth_ids", "rows", "cols", "counts"):
            view = np.asarray(getattr(self, name)).view()
            view.flags.writeable = False
            object.__setattr__(self, name, view)

    @property
    def shape(self) -> tuple[int, int]:
        """``(number of segmentation ids, number of ground-truth ids)``."""
        return (len(self.segmentation_ids), len(self.ground_truth_ids))

    @property
    def n_voxels(self) -> int:
        """Number of voxels counted (ground truth not ignored)."""
        return int(self.counts.sum())

    @property
    def segmentation_sizes(self) -> np.ndarray:
        """Voxels counted per segmentation id (row sums), int64."""
        return _group_sum(self.rows, self.counts, self.shape[0])

    @property
    def ground_truth_sizes(self) -> np.ndarray:
        """Voxels counted per ground-truth id (column sums), int64."""
        return _group_sum(self.cols, self.counts, self.shape[1])

    def to_sparse(self):
        """Return the table as a ``scipy.sparse.csr_array`` of int64 counts.

        Returns
        -------
        scipy.sparse.csr_array
            Shape :attr:`shape`, segmentation rows, ground-truth columns.
        """
        from scipy import sparse

        return sparse.csr_array((self.counts, (self.rows, self.cols)), shape=self.shape)

    def to_dense(self) -> np.ndarray:
        """Return the table as a dense int64 array (small tables only).

        Returns
        -------
        numpy.ndarray
            Shape :attr:`shape`, segmentation rows, ground-truth columns.
        """
        dense = np.zeros(self.shape, dtype=np.int64)
        dense[self.rows, self.cols] = self.counts
        return dense


def _group_sum(index: np.ndarray, counts: np.ndarray, size: int) -> np.ndarray:
    """Sum ``counts`` grouped by ``index`` (exact: counts stay below 2**53)."""
    return np.bincount(index, weights=counts, minlength=size).astype(np.int64)


# ---------------------------------------------------------------- input checks
def _label_array(data, name: str) -> np.ndarray:
    """Return ``data`` as an integer array, or raise a clear error."""
    array = np.asarray(data)
    kind = array.dtype.kind
    if kind == "b":
        return array.view(np.uint8)
    if kind in "iu":
        return array
    if kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"{name} has NaN or infinite values; label ids must be integers")
        if not np.array_equal(array, np.trunc(array)):
            raise ValueError(
                f"{name} is a {array.dtype} array with non-integer values; "
                "label ids must be integers"
            )
        if array.size and (array.min() < -(2.0**63) or array.max() >= 2.0**63):
            raise ValueError(f"{name} has values outside the int64 range")
        return array.astype(np.int64)
    raise TypeError(f"{name} must be an integer (or bool) label array, got dtype {array.dtype}")


def _check_pair(segmentation, ground_truth) -> tuple[np.ndarray, np.ndarray]:
    seg = _label_array(segmentation, "segmentation")
    gt = _label_array(ground_truth, "ground truth")
    if seg.shape != gt.shape:
        raise ValueError(
            "segmentation and ground truth must have the same shape, got "
            f"segmentation {seg.shape} and ground truth {gt.shape}"
        )
    return seg.reshape(-1), gt.reshape(-1)


# ---------------------------------------------------------------- counting
class _Codes:
    """Labels mapped to order-preserving codes ``0 .. size - 1`` (intp).

    By default the code is the id minus the smallest id (no sort, one pass);
    with ``compact=True`` it is the rank among the distinct ids (a sort), for
    ids spread too widely to fit a 64-bit pair key.
    """

    def __init__(self, labels: np.ndarray, low: int, high: int, compact: bool) -> None:
        self.dtype = labels.dtype
        self.low = low
        if compact:
            self.ids = np.unique(labels)
            self.size = len(self.ids)
            self.codes = np.searchsorted(self.ids, labels).astype(np.intp, copy=False)
            return
        self.ids = None
        self.size = high - low + 1
        if labels.dtype.kind == "u" and labels.dtype.itemsize >= np.dtype(np.intp).itemsize:
            # uint64 ids may exceed the intp range: shift them down first.
            shifted = np.subtract(labels, labels.dtype.type(low)) if low else labels
            self.codes = shifted.view(np.intp)
        else:
            self.codes = labels.astype(np.intp, copy=low != 0)
            if low:
                np.subtract(self.codes, low, out=self.codes)  # a private copy

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Return the ids of ``codes`` in the labels' dtype."""
        if self.ids is not None:
            return self.ids[codes]
        if self.dtype.kind == "u":
            return codes.astype(self.dtype) + self.dtype.type(self.low)
        return (codes + self.low).astype(self.dtype)


def _pair_counts(seg: np.ndarray, gt: np.ndarray):
    """Count voxels per (segmentation id, ground-truth id) pair.

    Returns the distinct pairs, sorted by segmentation then ground-truth id,
    as two id arrays, and their int64 counts. Does not modify the inputs.
    """
    seg_low, seg_high = int(seg.min()), int(seg.max())
    gt_low, gt_high = int(gt.min()), int(gt.max())
    if (seg_high - seg_low + 1) * (gt_high - gt_low + 1) > _KEY_LIMIT:
        # Ids too spread out for one 64-bit key: rank the wider one by a sort.
        if seg_high - seg_low >= gt_high - gt_low:
            seg_codes = _Codes(seg, seg_low, seg_high, compact=True)
            compact_other = seg_codes.size * (gt_high - gt_low + 1) > _KEY_LIMIT
            gt_codes = _Codes(gt, gt_low, gt_high, compact=compact_other)
        else:
            gt_codes = _Codes(gt, gt_low, gt_high, compact=True)
            compact_other = gt_codes.size * (seg_high - seg_low + 1) > _KEY_LIMIT
            seg_codes = _Codes(seg, seg_low, seg_high, compact=compact_other)
    else:
        seg_codes = _Codes(seg, seg_low, seg_high, compact=False)
        gt_codes = _Codes(gt, gt_low, gt_high, compact=False)
    n_gt = gt_codes.size
    n_bins = seg_codes.size * n_gt
    key = seg_codes.codes * n_gt  # a new array: the inputs are never written
    key += gt_codes.codes
    del seg_codes.codes, gt_codes.codes
    if n_bins <= max(_MIN_BINS, min(_MAX_BINS, key.size)):
        histogram = np.bincount(key, minlength=n_bins)
        pairs = np.flatnonzero(histogram)
        counts = histogram[pairs]
    else:
        key.sort()  # in place: the key array is ours
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        pairs = key[starts]
        counts = np.diff(np.append(starts, key.size))
    seg_part, gt_part = np.divmod(pairs, n_gt)
    return seg_codes.decode(seg_part), gt_codes.decode(gt_part), counts.astype(np.int64)


# ---------------------------------------------------------------- public API
def contingency_table(
    segmentation, ground_truth, *, ignore_ground_truth: Iterable[int] = (0,)
) -> ContingencyTable:
    """Count the voxels of every (segmentation id, ground-truth id) pair.

    Parameters
    ----------
    segmentation : array_like of int
        Candidate label image, any dimensionality. Bool and integer-valued
        float arrays are accepted too.
    ground_truth : array_like of int
        Ground-truth label image, same shape as `segmentation`.
    ignore_ground_truth : iterable of int, optional
        Ground-truth ids whose voxels are left out (default: 0, the
        membrane / unlabelled class). Pass ``()`` to count every voxel.

    Returns
    -------
    ContingencyTable
        Sparse counts, segmentation ids as rows, ground-truth ids as columns.

    Raises
    ------
    ValueError
        If the shapes differ, if no voxel is left once the ignored
        ground-truth ids are removed, or if a float array holds non-integer
        values.
    TypeError
        If an array is not of an integer, bool or float dtype.

    Examples
    --------
    >>> import numpy as np
    >>> seg = np.array([3, 3, 3, 4, 4, 0])
    >>> gt = np.array([1, 1, 2, 2, 2, 0])
    >>> table = contingency_table(seg, gt)
    >>> table.to_dense().tolist()
    [[2, 1], [0, 2]]
    >>> table.segmentation_ids.tolist(), table.ground_truth_ids.tolist()
    ([3, 4], [1, 2])
    """
    ignore = tuple(sorted({operator.index(label) for label in ignore_ground_truth}))
    seg, gt = _check_pair(segmentation, ground_truth)
    empty_message = (
        f"ground truth has no labelled voxels: every voxel has an ignored label {ignore}, "
        "so there is nothing to evaluate"
    )
    if seg.size == 0:
        raise ValueError(f"{empty_message} (the arrays are empty)")
    seg_ids, gt_ids, counts = _pair_counts(seg, gt)
    if ignore:
        info = np.iinfo(gt_ids.dtype)
        present = [label for label in ignore if info.min <= label <= info.max]
        if present:
            keep = ~np.isin(gt_ids, np.array(present, dtype=gt_ids.dtype))
            seg_ids, gt_ids, counts = seg_ids[keep], gt_ids[keep], counts[keep]
    if counts.size == 0:
        raise ValueError(empty_message)
    # Entries are sorted by segmentation id, so the row index is a running count.
    new_row = np.empty(seg_ids.size, dtype=bool)
    new_row[0] = True
    np.not_equal(seg_ids[1:], seg_ids[:-1], out=new_row[1:])
    rows = np.cumsum(new_row, dtype=np.int64) - 1
    gt_unique, cols = np.unique(gt_ids, return_inverse=True)
    return ContingencyTable(
        segmentation_ids=seg_ids[new_row],
        ground_truth_ids=gt_unique,
        rows=rows,
        cols=cols.astype(np.int64, copy=False).reshape(-1),
        counts=counts,
        ignore_ground_truth=ignore,
    )


def _get_table(segmentation, ground_truth, table) -> ContingencyTable:
    if table is not None:
        if not isinstance(table, ContingencyTable):
            raise TypeError(
                f"table must be a ContingencyTable (see contingency_table), got {type(table)}"
            )
        return table
    if segmentation is None or ground_truth is None:
        raise TypeError("pass a segmentation and a ground truth, or a table")
    return contingency_table(segmentation, ground_truth)


def variation_of_information(
    segmentation, ground_truth, *, table: ContingencyTable | None = None
) -> tuple[float, float]:
    """Return the split and merge parts of the variation of information, in bits.

    ``split = H(S|G) = -sum_ij (n_ij / N) log2(n_ij / t_j)`` measures false
    splits (oversegmentation) and ``merge = H(G|S) = -sum_ij (n_ij / N)
    log2(n_ij / s_i)`` false merges, where ``n_ij`` counts the voxels with
    segment ``i`` and ground-truth object ``j``, ``s_i`` and ``t_j`` are the
    segment and object sizes and ``N`` the voxels counted. Ground-truth
    label 0 is ignored; segmentation 0 is an ordinary segment (CREMI
    convention). Their sum is the variation of information.

    Parameters
    ----------
    segmentation : array_like of int
        Candidate label image (ignored when `table` is given; may be None).
    ground_truth : array_like of int
        Ground-truth label image, same shape (ignored when `table` is given).
    table : ContingencyTable, optional
        A precomputed table from :func:`contingency_table`.

    Returns
    -------
    split : float
        ``H(S|G)`` in bits, 0 when no ground-truth object is split.
    merge : float
        ``H(G|S)`` in bits, 0 when no segment merges two objects.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    >>> seg = np.array([1, 1, 2, 2, 3, 3, 4, 4])  # every object cut in half
    >>> variation_of_information(seg, gt)
    (1.0, 0.0)
    >>> variation_of_information(np.ones_like(gt), gt)  # everything merged
    (0.0, 1.0)
    """
    table = _get_table(segmentation, ground_truth, table)
    counts = table.counts.astype(np.float64)
    n = float(table.n_voxels)
    seg_sizes = table.segmentation_sizes[table.rows]
    gt_sizes = table.ground_truth_sizes[table.cols]
    # Each term is n_ij * log2(n_ij / size) <= 0, exactly 0 for a perfect match.
    split = -float(np.dot(counts, np.log2(counts / gt_sizes))) / n
    merge = -float(np.dot(counts, np.log2(counts / seg_sizes))) / n
    return split + 0.0, merge + 0.0  # + 0.0 turns -0.0 into 0.0


def adapted_rand_error(
    segmentation, ground_truth, *, table: ContingencyTable | None = None
) -> tuple[float, float, float]:
    """Return the adapted Rand error, precision and recall (CREMI convention).

    With ``n_ij`` the voxels of segment ``i`` and ground-truth object ``j``
    (ground-truth 0 left out), ``t_j`` the object sizes, ``s_i`` the segment
    sizes, ``N`` the voxels counted and ``c = sum_j n_0j`` the counted voxels
    of segmentation id 0 (singletons, each its own segment)::

        A  = sum_j t_j**2
        B  = sum_{i != 0} s_i**2 + c / N
        AB = sum_{i != 0, j} n_ij**2 + c / N
        precision = AB / B
        recall    = AB / A
        error     = 1 - 2 * precision * recall / (precision + recall)

    This is the arithmetic of ``cremi.evaluation.adapted_rand`` (there ``N``
    is the whole array size; see the module notes). Precision drops with
    false merges, recall with false splits.

    Parameters
    ----------
    segmentation : array_like of int
        Candidate label image (ignored when `table` is given; may be None).
    ground_truth : array_like of int
        Ground-truth label image, same shape (ignored when `table` is given).
    table : ContingencyTable, optional
        A precomputed table from :func:`contingency_table`.

    Returns
    -------
    error : float
        ``1 - F1`` of precision and recall; 0 is perfect.
    precision : float
        Fraction of the voxel pairs joined by the segmentation that the
        ground truth also joins.
    recall : float
        Fraction of the voxel pairs joined by the ground truth that the
        segmentation also joins.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    >>> seg = np.array([1, 1, 2, 2, 3, 3, 4, 4])  # every object cut in half
    >>> error, precision, recall = adapted_rand_error(seg, gt)
    >>> round(error, 4), precision, recall  # AB = 16, A = 32, B = 16
    (0.3333, 1.0, 0.5)
    """
    table = _get_table(segmentation, ground_truth, table)
    counts = table.counts.astype(np.float64)
    n = float(table.n_voxels)
    seg_sizes = table.segmentation_sizes.astype(np.float64)
    gt_sizes = table.ground_truth_sizes.astype(np.float64)
    ids = table.segmentation_ids
    zero_row = int(np.searchsorted(ids, 0)) if ids[0] <= 0 <= ids[-1] else -1
    if zero_row >= 0 and ids[zero_row] != 0:
        zero_row = -1
    in_zero = table.rows == zero_row
    singletons = float(counts[in_zero].sum()) / n  # c / N
    if zero_row >= 0:
        seg_sizes[zero_row] = 0.0
    joined = counts[~in_zero]
    sum_a = float(np.dot(gt_sizes, gt_sizes))
    sum_b = float(np.dot(seg_sizes, seg_sizes)) + singletons
    sum_ab = float(np.dot(joined, joined)) + singletons
    precision = sum_ab / sum_b
    recall = sum_ab / sum_a
    f_score = 2.0 * precision * recall / (precision + recall)
    return 1.0 - f_score, precision, recall


def evaluate_segmentation(segmentation, ground_truth) -> dict:
    """Score a segmentation against ground truth (ground-truth 0 ignored).

    Builds the contingency table once and derives every score from it.

    Parameters
    ----------
    segmentation : array_like of int
        Candidate label image, any dimensionality.
    ground_truth : array_like of int
        Ground-truth label image, same shape; label 0 is ignored.

    Returns
    -------
    dict
        Plain Python floats and ints (JSON-ready): ``voi_split``,
        ``voi_merge``, ``voi`` (bits), ``arand`` (adapted Rand error),
        ``arand_precision``, ``arand_recall``, ``n_voxels`` (voxels counted),
        ``n_segments`` (segmentation ids present in the counted voxels, 0
        included when present) and ``n_ground_truth`` (ground-truth ids
        counted).

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.array([[1, 1, 0, 2, 2], [1, 1, 0, 2, 2]])
    >>> scores = evaluate_segmentation(gt, gt)
    >>> scores["voi"], scores["arand"], scores["n_voxels"], scores["n_ground_truth"]
    (0.0, 0.0, 8, 2)
    """
    table = contingency_table(segmentation, ground_truth)
    split, merge = variation_of_information(None, None, table=table)
    error, precision, recall = adapted_rand_error(None, None, table=table)
    return {
        "voi_split": split,
        "voi_merge": merge,
        "voi": split + merge,
        "arand": error,
        "arand_precision": precision,
        "arand_recall": recall,
        "n_voxels": table.n_voxels,
        "n_segments": table.shape[0],
        "n_ground_truth": table.shape[1],
    }
