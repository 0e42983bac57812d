import numpy as np

from napari_connectome._sample_data import load_sample_phantom


def test_sample_layers_are_aligned_and_typed():
    layers = load_sample_phantom()
    (raw, raw_kw, raw_type), (neurons, neu_kw, _), (synapses, syn_kw, _) = layers
    assert raw_type == "image" and raw.dtype == np.uint8 and raw.ndim == 3
    assert neurons.shape == raw.shape == synapses.shape
    assert raw_kw["scale"] == neu_kw["scale"] == syn_kw["scale"]
    assert raw_kw["scale"][0] > raw_kw["scale"][1]  # anisotropic serial-section TEM
    assert len(np.unique(neurons)) > 20 and synapses.max() > 0


def test_sample_menu_opens_the_phantom(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-connectome", "phantom")
    names = [layer.name for layer in viewer.layers]
    assert names == ["EM", "neurons (truth)", "synapses (truth)"]
    assert tuple(viewer.layers["EM"].scale) == tuple(viewer.layers["neurons (truth)"].scale)
