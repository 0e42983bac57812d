"""Placement, filtering and arrows of the Synapses dock, without a viewer."""

from types import SimpleNamespace

import numpy as np
import pytest

from napari_connectome._widgets._scope import Region
from napari_connectome._widgets._synapse_view import (
    covered_region,
    grid_offset,
    pair_arrows,
    parse_neurons,
    rows_above,
    shifted,
    synapse_pixels,
    to_image,
    top_neurons,
)
from napari_connectome.core.connectome import connectome_edges
from napari_connectome.core.synapses import assign_partners, detect_synapses

VS = (40.0, 4.0, 4.0)


def layer(shape, scale=VS, translate=(0.0, 0.0, 0.0), name="L", metadata=None):
    return SimpleNamespace(
        name=name,
        data=np.zeros(shape, np.uint8),
        scale=np.array(scale),
        translate=np.array(translate),
        metadata=metadata or {},
    )


def test_grid_offset_of_crops_and_refusals():
    image = layer((4, 128, 96), name="EM", translate=(0.0, 100.0, 200.0))
    assert grid_offset(image, layer((4, 128, 96), translate=(0.0, 100.0, 200.0))) == (0, 0, 0)
    crop = layer((1, 32, 32), translate=(80.0, 100.0 + 64, 200.0 + 8))
    assert grid_offset(image, crop) == (2, 16, 2)
    with pytest.raises(ValueError, match="has shape .* but the image 'EM' has shape"):
        grid_offset(image, layer((4, 64, 96), translate=(0.0, 100.0, 200.0)))
    with pytest.raises(ValueError, match="not on the pixel grid"):
        grid_offset(image, layer((4, 128, 96), scale=(40, 8, 8), translate=(0, 100, 200)))
    with pytest.raises(ValueError, match="not on the pixel grid"):
        grid_offset(image, layer((4, 128, 96), translate=(0.0, 101.0, 200.0)))
    with pytest.raises(ValueError, match="is 2D but the image 'EM' is 3D"):
        grid_offset(image, layer((128, 96), scale=VS[1:], translate=(100.0, 200.0)))
    # a crop at the origin made by the plugin (Segment dock metadata) is accepted
    ours = layer(
        (4, 64, 96), translate=(0.0, 100.0, 200.0), metadata={"source": "napari-connectome"}
    )
    assert grid_offset(image, ours) == (0, 0, 0)


def test_covered_region_and_shift():
    region = Region((0, 0, 0), (4, 128, 96))
    inside = covered_region(region, (4, 128, 96), (2, 16, 2), (1, 32, 32))
    assert inside == Region((2, 16, 2), (3, 48, 34))
    assert shifted(inside, (2, 16, 2)) == Region((0, 0, 0), (1, 32, 32))
    plane = Region((1, 0, 0), (2, 128, 96), plane=True)
    with pytest.raises(ValueError, match="does not cover this section"):
        covered_region(plane, (4, 128, 96), (2, 16, 2), (1, 32, 32))


def test_to_image_and_synapse_pixels():
    plane = Region((3, 10, 20), (4, 42, 52), plane=True)
    assert to_image(np.array([[1.0, 2.0]]), plane).tolist() == [[3.0, 11.0, 22.0]]
    box = Region((1, 10, 20), (3, 42, 52))
    assert to_image(np.array([[1.0, 2.0, 3.0]]), box).tolist() == [[2.0, 12.0, 23.0]]
    assert to_image(np.zeros((0, 2)), plane).shape == (0, 3)
    assert synapse_pixels(np.array([[8.0, 12.0]]), VS[1:], plane).tolist() == [[3, 12, 23]]


def test_neurons_rows_and_arrows():
    prob = np.zeros((4, 64, 64), np.float32)
    prob[1:3, 20:30, 30:34] = 0.9
    pre = np.zeros_like(prob)
    pre[1:3, 20:30, 22:30] = 0.9  # presynaptic side: x < 32
    seg = np.ones(prob.shape, np.uint32)
    seg[:, :, 32:] = 7
    det = detect_synapses(prob, VS, min_size_nm3=0)
    table = assign_partners(det, seg, pre)
    assert table.pre.tolist() == [1]
    region = Region((0, 100, 200), (4, 164, 264))
    vectors, rows = pair_arrows(table, VS, region)
    assert rows.tolist() == [0] and vectors.shape == (1, 2, 3)
    start, step = vectors[0]
    assert 100 + 20 <= start[1] < 100 + 30 and start[2] < 200 + 32 <= start[2] + step[2]
    assert pair_arrows(table, VS, region, synapses=np.array([False]))[0].shape == (0, 2, 3)
    rows_all = table.rows()
    assert len(rows_above(rows_all, det.ids, det.confidence, 0.5)) == 1
    assert len(rows_above(rows_all, det.ids, det.confidence, 0.95)) == 0
    edges = connectome_edges(rows_all)
    assert top_neurons(edges) == [1, 7]


def test_parse_neurons():
    assert parse_neurons("12, 40 7, 12") == [12, 40, 7]
    assert parse_neurons("") == []
    with pytest.raises(ValueError, match="segment ids"):
        parse_neurons("12, a")
    with pytest.raises(ValueError, match="positive"):
        parse_neurons("0")
