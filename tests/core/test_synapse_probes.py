import numpy as np
import pytest

from napari_connectome.core.synapse_probes import partner_probes
from napari_connectome.core.synapses import detect_synapses

VS = (40.0, 4.0, 4.0)


def scene():
    prob = np.zeros((3, 80, 80), np.float32)
    prob[1, 30:50, 38:42] = 0.9
    pre = np.zeros(prob.shape, np.float32)
    pre[:, :, :38] = 0.7
    return detect_synapses(prob, VS, min_size_nm3=0), pre


def test_contact_and_zone_probes():
    det, pre = scene()
    probes = partner_probes(det, pre, reach_nm=20.0, max_probes=10_000)
    contact = probes.contact == 1
    assert contact.sum() == 80  # every synapse voxel
    assert np.all(det.labels[tuple(probes.coords[contact].T)] == 1)
    zone = probes.coords[~contact]
    assert not np.any(det.labels[tuple(zone.T)])
    # within 20 nm: one section away (40 nm) is too far, 5 px (20 nm) in-plane is not
    assert set(zone[:, 0].tolist()) == {1}
    assert zone[:, 2].min() == 38 - 5 and zone[:, 2].max() == 41 + 5
    np.testing.assert_allclose(probes.pre[contact], 0.0)
    np.testing.assert_allclose(probes.pre[~contact], np.where(zone[:, 2] < 38, 0.7, 0.0))
    assert np.all(probes.synapse == 0)


def test_probe_cap_is_reproducible():
    det, pre = scene()
    a = partner_probes(det, pre, max_probes=16)
    b = partner_probes(det, pre, max_probes=16)
    assert (a.contact == 1).sum() == 16 and (a.contact == 0).sum() == 16
    np.testing.assert_array_equal(a.coords, b.coords)
    uniform = partner_probes(det, None, max_probes=16)
    np.testing.assert_allclose(uniform.pre[uniform.contact == 0], 1.0)


def test_presynaptic_map_of_another_shape():
    det, pre = scene()
    with pytest.raises(ValueError, match="does not match"):
        partner_probes(det, pre[:, :10])
