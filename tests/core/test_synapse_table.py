import numpy as np
import pytest

from napari_connectome.core.synapses import (
    PartnerProbes,
    SynapseTable,
    assign_partners,
    detect_synapses,
    partner_probes,
)

VS = (40.0, 4.0, 4.0)


def _one_synapse_table(probes, fragments, **options):
    """A derived table of one synapse whose probes read ``fragments``."""
    table = SynapseTable(
        ids=np.array([1], np.uint32),
        positions=np.zeros((1, 3)),
        confidence=np.array([0.9]),
        volumes_nm3=np.array([1.0]),
        probes=probes,
        probe_fragments=np.asarray(fragments, np.uint64),
        **options,
    )
    table.derive()
    return table


def test_a_neighbour_that_does_not_face_the_presynaptic_segment_is_no_partner(polyadic_scene):
    seg, prob, pre = polyadic_scene()
    seg[:, :30, 38:50] = 5  # behind post 2 (x 30-37), away from the cleft
    prob[1:3, 18:42, 27:44] = 0.9  # the synapse object spills into 5 (x 38-43)
    det = detect_synapses(prob, VS, min_size_nm3=0, peak_threshold=None)
    plain = assign_partners(det, seg, pre, facing_nm=())
    assert sorted(plain.pairs[:, 1].tolist()) == [2, 3, 5]
    table = assign_partners(det, seg, pre, facing_nm=(8.0, 16.0))
    assert table.pre.tolist() == [1] and sorted(table.pairs[:, 1].tolist()) == [2, 3]
    # the facing probes follow the segmentation: with 2 merged into 5, 5 faces the cleft
    fragments = assign_partners(det, seg, pre, table=np.arange(6, dtype=np.uint64))
    fragments.update(np.array([0, 1, 5, 3, 4, 5], np.uint64))
    assert sorted(fragments.pairs[:, 1].tolist()) == [3, 5]
    # and after a voxel split that gives 2's cleft-side columns to 5, 5 faces the cleft
    split = seg.copy()
    split[:, :30, 30:34] = 5
    box = (slice(0, 4), slice(0, 30), slice(30, 34))
    near = assign_partners(
        det, seg, pre, table=np.arange(6, dtype=np.uint64), facing_nm=(8.0, 16.0)
    )
    assert sorted(near.pairs[:, 1].tolist()) == [2, 3]
    near.update(fragments=split, box=box)
    assert sorted(near.pairs[:, 1].tolist()) == [3, 5]


def test_a_tie_at_the_postsynaptic_cut_does_not_depend_on_rounding():
    # segment 1 presynaptic; 2 holds contact weight 0.01 + 0.01 + 0.06, 3 four times
    # that: exactly the share 0.25, though the first sum rounds to 0.07999999999999999
    contact = np.r_[0.01, 0.01, 0.06, 0.24, 0.04, 0.04, np.zeros(4)]
    pre = np.r_[np.zeros(6), np.ones(4)]
    coords = np.arange(10)[:, None] * np.array([0, 0, 1])
    probes = PartnerProbes(np.zeros(10, np.int64), coords, contact, pre)
    sums = np.add.reduceat(contact[:6], [0, 3])  # how the table sums each segment's weight
    assert sums[0] < 0.25 * sums[1]
    fragments = np.r_[[2] * 3, [3] * 3, [1] * 4]
    table = _one_synapse_table(probes, fragments, post_fraction=0.25, min_contacts=0.05)
    assert table.pre.tolist() == [1] and sorted(table.pairs[:, 1].tolist()) == [2, 3]


def test_candidate_weights_are_the_weights_the_postsynaptic_cut_compares():
    # segment 1 presynaptic; 2, 3 and 4 hold contact weights 4, 2 and 0.5
    contact = np.r_[np.ones(4), np.ones(2), 0.5, np.zeros(3)]
    coords = np.arange(10)[:, None] * np.array([0, 0, 1])
    probes = PartnerProbes(np.zeros(10, np.int64), coords, contact, np.r_[np.zeros(7), 1, 1, 1])
    fragments = np.r_[[2] * 4, [3] * 2, 4, [1] * 3]
    table = _one_synapse_table(probes, fragments, post_fraction=0.25, min_contacts=1.0)
    weights = table.candidate_weights()
    assert weights["segment"].tolist() == [2, 3, 4]  # every segment but the presynaptic
    assert weights["weight"].tolist() == [4.0, 2.0, 0.5]
    assert weights["synapse"].tolist() == [0, 0, 0]
    # the cut keeps those at or above max(min_contacts, post_fraction * best)
    assert sorted(table.pairs[:, 1].tolist()) == [2, 3]


def test_a_synapse_that_nothing_faces_keeps_the_contact_rule():
    # segment 1 presynaptic (zone probes), 2 and 3 in contact, every facing probe in 4
    coords = np.arange(30)[:, None] * np.array([0, 0, 1])
    contact = np.r_[np.ones(10), np.zeros(20)]
    pre = np.r_[np.zeros(10), np.ones(10), np.zeros(10)]
    facing_from = np.r_[np.full(20, -1), np.arange(10)]
    probes = PartnerProbes(np.zeros(30, np.int64), coords, contact, pre, facing_from)
    fragments = np.r_[[2] * 6, [3] * 4, [1] * 10, [4] * 10].astype(np.uint64)

    def table(frags):
        return SynapseTable(
            ids=np.array([1], np.uint32),
            positions=np.zeros((1, 3)),
            confidence=np.array([0.9]),
            volumes_nm3=np.array([1.0]),
            probes=probes,
            probe_fragments=frags,
        )

    lonely = table(fragments)
    lonely.derive()
    assert lonely.pre.tolist() == [1] and sorted(lonely.pairs[:, 1].tolist()) == [2, 3]
    # once 2's facing probes land in 1, only 2 faces the presynaptic segment
    facing_2 = fragments.copy()
    facing_2[20:26] = 1
    faced = table(facing_2)
    faced.derive()
    assert faced.pairs[:, 1].tolist() == [2]
    # an unsegmented presynaptic side (0 at the zone probes): landing on 0 faces nothing
    unsegmented = fragments.copy()
    unsegmented[10:26] = 0
    blind = table(unsegmented)
    blind.derive()
    assert blind.pre.tolist() == [0] and sorted(blind.pairs[:, 1].tolist()) == [2, 3]


def test_partners_follow_merges_and_splits_without_a_model(polyadic_scene):
    seg, prob, pre = polyadic_scene()
    det = detect_synapses(prob, VS, min_size_nm3=0, peak_threshold=None)
    # partners from fragments (the segment ids double as fragment ids) and a table
    table = assign_partners(det, seg, pre, table=np.arange(5, dtype=np.uint64))
    assert sorted(table.pairs[:, 1].tolist()) == [2, 3]
    table.update(np.array([0, 1, 2, 2, 4], np.uint64))  # merge 3 into 2
    assert table.pairs[:, 1].tolist() == [2]
    table.update(np.array([0, 1, 1, 3, 4], np.uint64))  # merge 2 into the pre segment 1
    assert table.pre.tolist() == [1] and table.pairs[:, 1].tolist() == [3]
    # a voxel split: fragment 3's lower half becomes fragment 5 of a new segment 7
    fragments = seg.copy()
    fragments[:, 45:, 30:50] = 5
    box = (slice(0, 4), slice(45, 60), slice(30, 50))
    table.update(np.array([0, 1, 2, 3, 4, 7], np.uint64), fragments=fragments, box=box)
    assert table.pre.tolist() == [1]
    assert sorted(table.pairs[:, 1].tolist()) == [2, 3]  # 7 is beyond the cleft (y < 42)


def test_synapse_without_partner_has_one_row_with_post_zero(polyadic_scene):
    seg, prob, pre = polyadic_scene()
    det = detect_synapses(prob, VS, min_size_nm3=0, peak_threshold=None)
    table = assign_partners(det, np.ones_like(seg), pre)  # one segment everywhere
    rows = table.rows()
    assert rows["pre"].tolist() == [1] and rows["post"].tolist() == [0]
    assert rows["partner_confidence"].tolist() == [0.0]  # no pair
    assert rows["confidence"].tolist() == pytest.approx(det.confidence.tolist())  # detection


def test_empty_detections_give_an_empty_table(polyadic_scene):
    seg, _, pre = polyadic_scene()
    det = detect_synapses(np.zeros(seg.shape, np.float32), VS, peak_threshold=None)
    table = SynapseTable.from_probes(det, partner_probes(det, pre), seg)
    assert len(table) == 0 and len(table.rows()) == 0 and table.pairs.shape == (0, 2)


def test_a_new_probe_fragments_array_is_picked_up(polyadic_scene):
    seg, prob, pre = polyadic_scene()
    det = detect_synapses(prob, VS, min_size_nm3=0, peak_threshold=None)
    table = assign_partners(det, seg, pre)
    assert sorted(table.pairs[:, 1].tolist()) == [2, 3]
    table.probe_fragments = np.where(table.probe_fragments == 3, 2, table.probe_fragments)
    table.derive()
    assert table.pairs[:, 1].tolist() == [2]


def test_setting_probe_fragments_regroups_only_what_changed(polyadic_scene):
    seg, prob, pre = polyadic_scene()
    det = detect_synapses(prob, VS, min_size_nm3=0, peak_threshold=None)
    ident = np.arange(8, dtype=np.uint64)
    table = assign_partners(det, seg, pre, table=ident, facing_nm=(8.0, 16.0))
    split = seg.copy()
    split[:, :30, 30:34] = 5  # 2's cleft-side columns become fragment 5
    at_probes = split[tuple(table.probes.coords.T)].astype(np.uint64)
    table.set_probe_fragments(at_probes)
    table.derive()
    fresh = SynapseTable.from_probes(det, table.probes, split, ident)
    np.testing.assert_array_equal(table.rows(), fresh.rows())
    assert sorted(table.pairs[:, 1].tolist()) == [3, 5]
    same = table._groups
    table.set_probe_fragments(at_probes.copy())  # nothing changed: the sums are kept
    assert table._groups is same
    with pytest.raises(ValueError, match="fragment ids for"):
        table.set_probe_fragments(at_probes[:-1])
