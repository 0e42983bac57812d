import numpy as np
import pytest

from napari_connectome.core.synapses import (
    DETECTION_DEFAULTS,
    SECTION_NM,
    assign_partners,
    detect_synapses,
    effective_peak_threshold,
    partner_probes,
)

VS = (40.0, 4.0, 4.0)


def blob(shape, centre, radius_px, value=0.9):
    z, y, x = np.indices(shape)
    d2 = (y - centre[1]) ** 2 + (x - centre[2]) ** 2
    out = np.zeros(shape, np.float32)
    sel = (d2 <= radius_px**2) & (np.abs(z - centre[0]) <= 1)
    out[sel] = value
    return out


def test_detect_positions_sizes_confidence():
    prob = blob((6, 80, 80), (2, 20, 20), 6, 0.9) + blob((6, 80, 80), (3, 60, 60), 6, 0.7)
    det = detect_synapses(prob, VS, peak_threshold=None, min_size_nm3=0)
    assert len(det) == 2
    # ids ordered by decreasing confidence; positions in nm
    np.testing.assert_allclose(det.confidence, [0.9, 0.7], atol=1e-6)
    np.testing.assert_allclose(det.positions[0], [2 * 40, 20 * 4, 20 * 4], atol=1e-6)
    np.testing.assert_allclose(det.positions[1], [3 * 40, 60 * 4, 60 * 4], atol=1e-6)
    n = int((prob > 0.8).sum())
    assert det.sizes[0] == n
    assert det.volumes_nm3[0] == pytest.approx(n * 40 * 4 * 4)
    assert det.labels.dtype == np.uint32
    assert set(np.unique(det.labels)) == {0, 1, 2}
    assert np.all(det.labels[prob > 0.8] == 1)


def test_the_defaults_are_the_bundled_models_settings():
    # a cleft at 0.9 everywhere lacks the confident core the bundled model's peak
    # threshold asks for; with one at 0.99 it is kept, and whole
    prob = blob((6, 80, 80), (2, 40, 40), 12, 0.9)
    assert len(detect_synapses(prob, VS)) == 0
    prob[2, 40, 40] = 0.99
    (size,) = detect_synapses(prob, VS).volumes_nm3
    assert size == pytest.approx(int((prob >= 0.5).sum()) * 40 * 4 * 4)
    assert size >= DETECTION_DEFAULTS["min_size_nm3"]
    assert len(detect_synapses(prob, VS, nms_distance_nm=0)) == 1


def test_size_floor_in_nm3_uses_voxel_size():
    prob = blob((6, 80, 80), (2, 20, 20), 3)  # 29 px x 3 sections = 87 voxels
    n = int((prob > 0).sum())
    assert len(detect_synapses(prob, VS, min_size_nm3=n * 640 - 1, peak_threshold=None)) == 1
    assert len(detect_synapses(prob, VS, min_size_nm3=n * 640 + 1, peak_threshold=None)) == 0
    # the same voxels at a finer voxel size are a smaller object
    assert (
        len(detect_synapses(prob, (20.0, 2.0, 2.0), min_size_nm3=n * 640 - 1, peak_threshold=None))
        == 0
    )


def test_nms_folds_nearby_weaker_components_into_the_stronger():
    prob = blob((6, 80, 80), (2, 20, 20), 4, 0.95) + blob((6, 80, 80), (2, 20, 34), 4, 0.6)
    assert (
        len(detect_synapses(prob, VS, nms_distance_nm=0, min_size_nm3=0, peak_threshold=None)) == 2
    )
    det = detect_synapses(
        prob, VS, nms_distance_nm=100.0, min_size_nm3=0, peak_threshold=None
    )  # 56 nm apart
    assert len(det) == 1
    assert set(np.unique(det.labels)) == {0, 1}
    assert det.sizes[0] == int((prob > 0).sum())
    far = detect_synapses(prob, VS, nms_distance_nm=40.0, min_size_nm3=0, peak_threshold=None)
    assert len(far) == 2


def test_effective_peak_threshold_is_never_below_the_threshold():
    assert effective_peak_threshold(0.5, None) == 0.5
    assert effective_peak_threshold(0.5, 0.97) == 0.97
    assert effective_peak_threshold(0.8, 0.6) == 0.8


def test_peak_threshold_keeps_whole_clefts_with_a_confident_core():
    # a cleft: a broad 0.75 region with a 0.97 core, and a lukewarm blob without a core
    prob = blob((6, 80, 80), (2, 20, 20), 8, 0.75)
    prob[2, 19:22, 19:22] = 0.97
    prob += blob((6, 80, 80), (3, 60, 60), 8, 0.75)
    det = detect_synapses(prob, VS, threshold=0.7, peak_threshold=0.95, min_size_nm3=0)
    assert len(det) == 1
    # the whole region around the core is the object, not just the core
    assert det.sizes[0] == int((prob[:, :40, :40] >= 0.7).sum())
    np.testing.assert_allclose(det.positions[0][1:], [20 * 4, 20 * 4], atol=8)
    # without it both blobs are objects; a peak threshold under the threshold changes nothing
    assert len(detect_synapses(prob, VS, threshold=0.7, min_size_nm3=0, peak_threshold=None)) == 2
    low = detect_synapses(prob, VS, threshold=0.7, peak_threshold=0.1, min_size_nm3=0)
    assert len(low) == 2
    # the core alone at the high threshold is a much smaller object
    core = detect_synapses(prob, VS, threshold=0.95, min_size_nm3=0, peak_threshold=None)
    assert len(core) == 1 and core.sizes[0] == 9


def test_no_synapses_and_2d():
    det = detect_synapses(np.zeros((4, 32, 32), np.float32), VS, peak_threshold=None)
    assert len(det) == 0 and det.positions.shape == (0, 3)
    assert not det.labels.any()
    prob2d = blob((1, 50, 50), (0, 25, 25), 8)[0]
    det2 = detect_synapses(prob2d, (4.0, 4.0), min_size_nm3=0, peak_threshold=None)
    assert len(det2) == 1
    np.testing.assert_allclose(det2.positions[0], [100.0, 100.0])
    # a 2D map is one section: SECTION_NM thick by default, or as thick as given
    area_nm2 = det2.sizes[0] * 16.0
    assert det2.volumes_nm3[0] == pytest.approx(area_nm2 * SECTION_NM)
    thin = detect_synapses(
        prob2d, (4.0, 4.0), min_size_nm3=0, section_nm=40.0, peak_threshold=None
    )
    assert thin.volumes_nm3[0] == pytest.approx(area_nm2 * 40.0)
    floor = area_nm2 * SECTION_NM
    assert len(detect_synapses(prob2d, (4.0, 4.0), min_size_nm3=floor, peak_threshold=None)) == 1
    assert (
        len(detect_synapses(prob2d, (4.0, 4.0), min_size_nm3=floor * 1.01, peak_threshold=None))
        == 0
    )


@pytest.mark.parametrize(
    ("prob", "vs", "kwargs", "match"),
    [
        (np.zeros((2, 2, 2, 2)), VS, {}, "2D or 3D"),
        (np.full((2, 8, 8), np.nan), VS, {}, "NaN"),
        (np.zeros((2, 8, 8)), (40.0, 4.0), {}, "voxel_size"),
        (np.zeros((2, 8, 8)), (40.0, -4.0, 4.0), {}, "voxel_size"),
        (np.zeros((2, 8, 8)), VS, {"threshold": 1.5}, "threshold"),
        (np.zeros((2, 8, 8)), VS, {"peak_threshold": 1.5}, "peak_threshold"),
        (np.zeros((8, 8)), (4.0, 4.0), {"section_nm": 0.0}, "section_nm"),
    ],
)
def test_detect_bad_input(prob, vs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        detect_synapses(prob, vs, **kwargs)


def test_polyadic_partners(polyadic_scene):
    seg, prob, pre = polyadic_scene()
    det = detect_synapses(prob, VS, min_size_nm3=0, peak_threshold=None)
    table = assign_partners(det, seg, pre)
    assert table.pre.tolist() == [1]
    assert table.pre_confidence[0] == pytest.approx(1.0)
    assert sorted(table.pairs[:, 1].tolist()) == [2, 3]
    rows = table.rows()
    assert rows["pre"].tolist() == [1, 1] and rows["post"].tolist() == [2, 3]
    assert rows["id"].tolist() == [1, 1]
    np.testing.assert_allclose(rows["z"], det.positions[0, 0])
    assert np.all((rows["confidence"] > 0) & (rows["confidence"] <= 1))


def test_a_postsynaptic_map_drops_a_neighbour_the_synapse_only_spills_into(polyadic_scene):
    seg, prob, pre = polyadic_scene()
    det = detect_synapses(prob, VS, min_size_nm3=0, peak_threshold=None)
    post = np.zeros(seg.shape, np.float32)
    post[seg == 2] = 0.9  # the model sees a postsynaptic density in 2 only
    post[seg == 3] = 0.05
    assert sorted(assign_partners(det, seg, pre).pairs[:, 1].tolist()) == [2, 3]
    by_post = {"synapse": prob, "contact_weight": "postsynaptic"}
    table = assign_partners(det, seg, pre, post, **by_post)
    assert table.pre.tolist() == [1] and table.pairs[:, 1].tolist() == [2]
    # the weights sum the probabilities: with a low enough share, 3 comes back
    lenient = assign_partners(det, seg, pre, post, post_fraction=0.01, min_contacts=0.5, **by_post)
    assert sorted(lenient.pairs[:, 1].tolist()) == [2, 3]
    with pytest.raises(ValueError, match="postsynaptic map"):
        assign_partners(det, seg, pre, post[:, :50], **by_post)


def test_contacts_weigh_the_squared_synapse_probability(polyadic_scene):
    seg, prob, pre = polyadic_scene()
    det = detect_synapses(prob, VS, min_size_nm3=0, peak_threshold=None)
    confident = prob.copy()
    confident[(prob > 0) & (seg == 3)] = 0.3  # the object is barely in 3: 0.09 squared
    kept = assign_partners(det, seg, pre, synapse=prob, contact_weight="synapse_squared")
    assert sorted(kept.pairs[:, 1].tolist()) == [2, 3]
    table = assign_partners(det, seg, pre, synapse=confident, contact_weight="synapse_squared")
    assert table.pre.tolist() == [1] and table.pairs[:, 1].tolist() == [2]
    # the postsynaptic map, when chosen, weighs the contacts instead
    post = np.ones(seg.shape, np.float32)
    chosen = assign_partners(det, seg, pre, post, synapse=confident, contact_weight="postsynaptic")
    assert sorted(chosen.pairs[:, 1].tolist()) == [2, 3]
    # without the synapse map the postsynaptic one stands in, and says so
    with pytest.warns(UserWarning, match="using 'postsynaptic'"):
        fallback = assign_partners(det, seg, pre, post)
    assert sorted(fallback.pairs[:, 1].tolist()) == [2, 3]
    with pytest.raises(ValueError, match="synapse probability map"):
        assign_partners(det, seg, pre, synapse=prob[:, :50])
    with pytest.raises(ValueError, match="contact weight must be one of"):
        assign_partners(det, seg, pre, synapse=prob, contact_weight="psd")


def test_segment_without_presynaptic_map_still_assigns(polyadic_scene):
    seg, prob, _ = polyadic_scene()
    det = detect_synapses(prob, VS, min_size_nm3=0, peak_threshold=None)
    table = assign_partners(det, seg, None)
    assert table.pre[0] in (1, 2, 3, 4)
    assert len(table.rows()) >= 1


def test_bad_segmentation(polyadic_scene):
    seg, prob, pre = polyadic_scene()
    det = detect_synapses(prob, VS, min_size_nm3=0, peak_threshold=None)
    with pytest.raises(ValueError, match="segment the image first"):
        assign_partners(det, None, pre)
    with pytest.raises(ValueError, match="shape"):
        assign_partners(det, seg[:, :50], pre)
    with pytest.raises(ValueError, match="presynaptic map"):
        partner_probes(det, pre[:, :50])
