import numpy as np
import pytest

from napari_connectome.core.synapse_probes import (
    PRE_POWER,
    contact_source,
    partner_probes,
    probes_in_box,
)
from napari_connectome.core.synapses import detect_synapses

VS = (40.0, 4.0, 4.0)


def scene():
    prob = np.zeros((3, 80, 80), np.float32)
    prob[1, 30:50, 38:42] = 0.9
    pre = np.zeros(prob.shape, np.float32)
    pre[:, :, :38] = 0.7
    return detect_synapses(prob, VS, min_size_nm3=0, peak_threshold=None), pre


def test_contact_and_zone_probes():
    det, pre = scene()
    probes = partner_probes(det, pre, reach_nm=20.0, max_probes=10_000, facing_nm=())
    assert np.all(probes.facing() == -1)
    contact = probes.contact == 1
    assert contact.sum() == 80  # every synapse voxel
    assert np.all(det.labels[tuple(probes.coords[contact].T)] == 1)
    zone = probes.coords[~contact]
    assert not np.any(det.labels[tuple(zone.T)])
    # within 20 nm: one section away (40 nm) is too far, 5 px (20 nm) in-plane is not
    assert set(zone[:, 0].tolist()) == {1}
    assert zone[:, 2].min() == 38 - 5 and zone[:, 2].max() == 41 + 5
    np.testing.assert_allclose(probes.pre[contact], 0.0)
    # zone probes weigh the presynaptic probability to the power PRE_POWER by default
    expected = np.where(zone[:, 2] < 38, 0.7**PRE_POWER, 0.0)
    np.testing.assert_allclose(probes.pre[~contact], expected)
    assert np.all(probes.synapse == 0)
    linear = partner_probes(
        det, pre, reach_nm=20.0, max_probes=10_000, pre_power=1.0, facing_nm=()
    )
    expected = np.where(zone[:, 2] < 38, 0.7, 0.0)
    np.testing.assert_allclose(linear.pre[linear.contact == 0], expected)


def test_contact_probes_weigh_the_postsynaptic_probability():
    det, pre = scene()
    post = np.zeros(pre.shape, np.float32)
    post[:, :, 40:] = 0.6  # the post side of the cleft (x 38-41)
    probes = partner_probes(det, pre, post, reach_nm=20.0, max_probes=10_000)
    plain = partner_probes(det, pre, reach_nm=20.0, max_probes=10_000)
    np.testing.assert_array_equal(probes.coords, plain.coords)  # the same voxels
    np.testing.assert_allclose(probes.pre, plain.pre)
    on_synapse = det.labels[tuple(probes.coords.T)] == 1
    expected = np.where(probes.coords[:, 2] >= 40, 0.6, 0.0) * on_synapse
    np.testing.assert_allclose(probes.contact, expected)


def test_contact_power_raises_each_contact_weight():
    det, pre = scene()
    prob = np.zeros(pre.shape, np.float32)
    prob[1, 30:50, 38:42] = 0.8
    squared = partner_probes(det, pre, prob, contact_power=2.0, max_probes=10_000)
    on_synapse = squared.contact > 0
    assert on_synapse.sum() == 80
    np.testing.assert_allclose(squared.contact[on_synapse], 0.64, rtol=1e-6)
    with pytest.raises(ValueError, match="contact_power"):
        partner_probes(det, pre, prob, contact_power=0.0)


def test_contact_source_names_the_map_and_its_power():
    synapse, post = np.full((2, 2), 0.5), np.full((2, 2), 0.25)
    weights, power = contact_source(synapse, post, "synapse_squared")
    assert weights is synapse and power == 2.0
    weights, power = contact_source(synapse, post, "postsynaptic")
    assert weights is post and power == 1.0
    # the named map may be missing: the other one weighs the contacts (with a
    # warning), and without either none does
    with pytest.warns(UserWarning, match="'postsynaptic' needs a map"):
        assert contact_source(synapse, None, "postsynaptic") == (synapse, 2.0)
    with pytest.warns(UserWarning, match="using 'postsynaptic'"):
        assert contact_source(None, post, "synapse_squared") == (post, 1.0)
    assert contact_source(None, None) == (None, 1.0)
    with pytest.raises(ValueError, match="contact weight must be one of"):
        contact_source(synapse, post, "psd")


def test_squared_weights_prefer_a_confident_small_side():
    # one side: 4 zone voxels at 0.9; the other: 8 at 0.5. Summed, 3.6 < 4.0 (the large
    # lukewarm side wins); squared, 3.24 > 2.0 (the confident side wins).
    prob = np.zeros((1, 20, 20), np.float32)
    prob[0, 10, 10] = 0.9
    det = detect_synapses(prob, (4.0, 4.0, 4.0), min_size_nm3=0, peak_threshold=None)
    pre = np.zeros(prob.shape, np.float32)
    pre[0, 9, 10] = pre[0, 10, 9] = pre[0, 11, 10] = pre[0, 10, 11] = 0.9  # confident
    seg = np.ones(prob.shape, np.uint32)
    seg[0, 9, 10] = seg[0, 10, 9] = seg[0, 11, 10] = seg[0, 10, 11] = 2
    ring = [(9, 9), (9, 11), (11, 9), (11, 11), (8, 10), (12, 10), (10, 8), (10, 12)]
    for y, x in ring:
        pre[0, y, x] = 0.5
    kwargs = {"reach_nm": 8.0, "max_probes": 10_000}
    for power, winner in ((1.0, 1), (2.0, 2)):
        probes = partner_probes(det, pre, pre_power=power, **kwargs)
        zone = probes.contact == 0
        at = seg[tuple(probes.coords[zone].T)]
        weights = {s: probes.pre[zone][at == s].sum() for s in (1, 2)}
        assert max(weights, key=weights.get) == winner, (power, weights)


def test_bad_pre_power():
    det, pre = scene()
    with pytest.raises(ValueError, match="pre_power"):
        partner_probes(det, pre, pre_power=0.0)


def test_probe_cap_is_reproducible():
    det, pre = scene()
    a = partner_probes(det, pre, max_probes=16)
    b = partner_probes(det, pre, max_probes=16)
    facing = a.facing() >= 0
    assert (a.contact == 1).sum() == 16 and (a.contact[~facing] == 0).sum() == 16
    assert facing.sum() == 16 * 3  # three distances from each contact probe
    np.testing.assert_array_equal(a.coords, b.coords)
    uniform = partner_probes(det, None, max_probes=16)
    np.testing.assert_allclose(uniform.pre[uniform.contact == 0], 1.0)


def test_presynaptic_map_of_another_shape():
    det, pre = scene()
    with pytest.raises(ValueError, match="does not match"):
        partner_probes(det, pre[:, :10])


def test_facing_probes_step_towards_the_presynaptic_side():
    det, pre = scene()  # presynaptic side: x < 38; the cleft: x 38-41, y 30-49
    probes = partner_probes(det, pre, max_probes=10_000, facing_nm=(8.0, 16.0))
    facing = probes.facing()
    is_facing = facing >= 0
    assert is_facing.sum() == 2 * (probes.contact == 1).sum()
    origin = probes.coords[facing[is_facing]]
    step = probes.coords[is_facing] - origin
    assert np.all(probes.contact[facing[is_facing]] == 1)  # they face from contact probes
    assert np.all(step[:, 0] == 0)  # within the section (40 nm sections, 4 nm pixels)
    assert np.all(step[:, 2] < 0)  # towards the presynaptic side
    np.testing.assert_allclose(np.abs(step[:, 2]).max(), 4)  # 16 nm at 4 nm per pixel
    assert np.all((probes.contact[is_facing] == 0) & (probes.pre[is_facing] == 0))
    assert not np.any(partner_probes(det, None).facing() >= 0)  # no map, no direction


def test_bad_facing_distances():
    det, pre = scene()
    with pytest.raises(ValueError, match="facing distances"):
        partner_probes(det, pre, facing_nm=(30.0, 0.0))


def test_a_flat_or_noisy_presynaptic_map_gives_no_facing_direction():
    det, _ = scene()
    noise = np.random.default_rng(0).normal(0.0, 1e-4, det.labels.shape)
    warm = (0.8 + noise).astype(np.float32)
    assert not np.any(partner_probes(det, warm).facing() >= 0)


def test_probes_in_box_takes_open_ends_and_none():
    coords = np.array([[0, 0, 0], [1, 5, 9], [2, 9, 3], [3, 2, 2]])
    box = (slice(1, None), slice(None, 9), slice(2, 10))
    np.testing.assert_array_equal(probes_in_box(coords, box), [False, True, False, True])
    assert probes_in_box(coords, None).all()
    assert not probes_in_box(coords, (slice(4, 8),)).any()  # no probe at z 4-7
