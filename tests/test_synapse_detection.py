import numpy as np
import pytest
import torch
from torch import nn

from napari_connectome.core.synapses import assign_partners
from napari_connectome.models.synapse_inference import SYNAPSE_OUTPUT
from napari_connectome.models.unet import default_config
from napari_connectome.synapse_detection import (
    DETECTION_DEFAULTS,
    SynapseDetectionCancelled,
    detect_volume,
    no_synapses_message,
)

CONFIG = default_config(
    out_channels=2,
    output=SYNAPSE_OUTPUT,
    base_channels=4,
    depth=2,
    normalization={"method": "meanstd"},  # mean grey stays mid grey in every section
)
VS = (40.0, 4.0, 4.0)


class DarkAndBright(nn.Module):
    """A stand-in synapse network: dark pixels are synapse, bright ones presynaptic."""

    def forward(self, x):
        return torch.cat([40 * (0.25 - x), 40 * (x - 0.7)], dim=1)


MODEL = (DarkAndBright(), CONFIG)


def scene():
    """Two synapses; segment 1 (bright, presynaptic) faces segments 2 and 3."""
    raw = np.full((4, 128, 96), 128, np.uint8)
    seg = np.zeros(raw.shape, np.uint32)
    seg[:, :, :48] = 1
    seg[:, :64, 48:] = 2
    seg[:, 64:, 48:] = 3
    raw[:, :, 20:44] = 255  # presynaptic side of segment 1
    raw[1:3, 10:30, 44:52] = 0  # synapse onto 2
    raw[1:3, 95:115, 44:52] = 0  # synapse onto 3, 340 nm away
    return raw, seg


def test_detect_partners_and_connectome():
    raw, seg = scene()
    calls = []
    result = detect_volume(
        raw,
        VS,
        segmentation=seg,
        model=MODEL,
        device="cpu",
        min_size_nm3=0,
        progress=lambda f, m: calls.append((f, m)),
    )
    assert len(result) == 2
    assert result.detections.labels.shape == raw.shape
    assert result.table.pre.tolist() == [1, 1]
    edges = {(int(a), int(b)): int(c) for a, b, c in result.edges()}
    assert edges == {(1, 2): 1, (1, 3): 1}
    assert calls[-1][0] == 1.0 and "2 synapses" in calls[-1][1]
    assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:], strict=False))
    # a merge of the two postsynaptic segments: one edge of weight 2, no model run
    result.update(np.array([0, 1, 2, 2], np.uint64))
    assert {(int(a), int(b)): int(c) for a, b, c in result.edges()} == {(1, 2): 2}


class NoPostsynapticSide(nn.Module):
    """:class:`DarkAndBright` with a third channel that sees no postsynaptic side."""

    def forward(self, x):
        return torch.cat([DarkAndBright()(x), torch.full_like(x, -40.0)], dim=1)


def test_the_synapse_probability_weighs_the_contacts_not_the_postsynaptic_channel():
    raw, seg = scene()
    model = (NoPostsynapticSide(), {**CONFIG, "out_channels": 3})
    result = detect_volume(raw, VS, segmentation=seg, model=model, device="cpu", min_size_nm3=0)
    assert result.postsynaptic is not None and result.postsynaptic.max() < 0.01
    assert len(result) == 2 and result.table.pre.tolist() == [1, 1]
    # contacts weigh the synapse probability squared (the default), so the silent
    # postsynaptic channel takes no partner away
    assert sorted(result.table.pairs[:, 1].tolist()) == [2, 3]
    # weighed by the postsynaptic channel instead, no segment holds any weight
    old = assign_partners(
        result.detections,
        seg,
        result.presynaptic,
        result.postsynaptic,
        synapse=result.probability,
        contact_weight="postsynaptic",
    )
    assert old.pre.tolist() == [1, 1] and len(old.pairs) == 0


def test_without_segmentation_there_are_no_partners():
    raw, _ = scene()
    result = detect_volume(raw, VS, model=MODEL, device="cpu", min_size_nm3=0)
    assert len(result) == 2 and result.table is None
    with pytest.raises(ValueError, match="assign them from a segmentation"):
        result.edges()


def test_segmentation_of_another_shape_is_refused():
    raw, seg = scene()
    with pytest.raises(ValueError, match=r"segmentation has shape \(4, 128, 95\).*image"):
        detect_volume(raw, VS, segmentation=seg[..., :95], model=MODEL, device="cpu")


def test_a_2d_section_thickness_is_recorded_and_checked():
    raw, _ = scene()
    result = detect_volume(raw[1], VS[1:], model=MODEL, device="cpu", min_size_nm3=0)
    assert result.settings["section_nm"] == 50.0  # the default: one 50 nm section
    thin = detect_volume(raw[1], VS[1:], model=MODEL, device="cpu", section_nm=40.0)
    assert thin.settings["section_nm"] == 40.0
    with pytest.raises(ValueError, match="section_nm must be a positive number"):
        detect_volume(raw[1], VS[1:], model=MODEL, device="cpu", section_nm=0.0)
    assert "section_nm" not in detect_volume(raw, VS, model=MODEL, device="cpu").settings


def test_no_synapses_found_is_explained():
    raw = np.full((2, 64, 64), 128, np.uint8)
    raw[:, :32] = 150
    result = detect_volume(
        raw, VS, segmentation=np.ones(raw.shape, np.uint32), model=MODEL, device="cpu"
    )
    assert len(result) == 0 and len(result.table) == 0  # an empty table still exports
    message = no_synapses_message(result)
    assert "no synapses found" in message and "threshold" in message


def test_cancel():
    raw, seg = scene()
    with pytest.raises(SynapseDetectionCancelled):
        detect_volume(raw, VS, model=MODEL, device="cpu", should_stop=lambda: True)


def test_peak_threshold_is_a_setting_of_the_run():
    raw, _ = scene()
    result = detect_volume(raw, VS, model=MODEL, device="cpu", min_size_nm3=0)
    assert result.settings["peak_threshold"] == DETECTION_DEFAULTS["peak_threshold"]
    assert result.settings["threshold"] == DETECTION_DEFAULTS["threshold"]
    # no synapse probability reaches 1, so a peak threshold of 1 keeps none
    none = detect_volume(raw, VS, model=MODEL, device="cpu", min_size_nm3=0, peak_threshold=1.0)
    assert len(none) == 0 and none.settings["peak_threshold"] == 1.0
    assert "peak threshold 1" in no_synapses_message(none)
