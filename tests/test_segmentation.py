import numpy as np
import pytest

from napari_connectome.segmentation import (
    SegmentationCancelled,
    segment_boundaries_state,
    segment_volume,
)
from napari_connectome.synthetic import make_phantom


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from napari_connectome.models import build_model, default_config, save_model

    config = default_config(base_channels=4, depth=2)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(build_model(config), config, path)
    return path


def test_threshold_is_a_table_lookup_over_fragments():
    phantom = make_phantom((4, 96, 96), (40, 4, 4), seed=2)
    boundaries = phantom.membranes.astype(np.float32)
    result = segment_boundaries_state(boundaries, phantom.voxel_size)
    low, high = result.segmentation_at(0.1), result.segmentation_at(0.9)
    assert low.shape == high.shape == boundaries.shape
    assert len(np.unique(high)) <= len(np.unique(low)) <= result.n_fragments
    table = result.table_at(0.1)
    np.testing.assert_array_equal(table[result.fragments], low)
    assert (result.fragments > 0).all()  # every voxel of tissue has a fragment


def test_segment_volume_reports_progress_and_keeps_the_state(tiny_model):
    phantom = make_phantom((3, 64, 64), (40, 4, 4), seed=3)
    steps = []
    result = segment_volume(
        phantom.raw, phantom.voxel_size, model=tiny_model, progress=lambda f, m: steps.append(f)
    )
    assert result.boundaries.shape == phantom.raw.shape
    assert result.boundaries.dtype == np.float32
    assert steps[0] == 0.0 and steps[-1] == 1.0 and steps == sorted(steps)
    assert result.model["name"] == str(tiny_model)
    assert result.segmentation.shape == phantom.raw.shape


def test_segment_volume_averages_the_default_views_and_records_them(tiny_model, tmp_path):
    import torch

    from napari_connectome.io import read_segmentation_store
    from napari_connectome.models import build_model, default_config, predict_boundaries
    from napari_connectome.models.inference import DEFAULT_AUGMENT
    from napari_connectome.segmentation import save_result

    phantom = make_phantom((2, 64, 64), (40, 4, 4), seed=4)
    args = (phantom.raw, phantom.voxel_size)
    torch.manual_seed(0)
    config = default_config(base_channels=4, depth=2)
    net = build_model(config).train()  # calibrate batch norm, then a lively output
    with torch.no_grad():
        net(torch.from_numpy(phantom.raw[0] / 255.0).float()[None, None])
        net.head.weight.mul_(10)
    lively = (net.eval(), config)
    result = segment_volume(*args, model=lively, section_correction=False)
    plain = segment_volume(*args, model=lively, section_correction=False, augment=1)
    assert result.model["augment"] == DEFAULT_AUGMENT > 1 and plain.model["augment"] == 1
    for res, views in ((result, DEFAULT_AUGMENT), (plain, 1)):
        expected = predict_boundaries(*args, lively, device="cpu", augment=views)
        np.testing.assert_allclose(res.boundaries, expected, atol=0.5 / 255 + 1e-6)
    assert not np.array_equal(result.boundaries, plain.boundaries)  # the views were averaged
    stored = read_segmentation_store(save_result(result, tmp_path / "s.zarr"))
    assert stored.attrs["model"]["augment"] == DEFAULT_AUGMENT
    with pytest.raises(ValueError, match="augment must be one of"):
        segment_volume(*args, model=tiny_model, augment=5)


def test_segment_volume_can_be_cancelled(tiny_model):
    phantom = make_phantom((3, 64, 64), (40, 4, 4), seed=3)
    with pytest.raises(SegmentationCancelled):
        segment_volume(phantom.raw, phantom.voxel_size, model=tiny_model, should_stop=lambda: True)


def test_bad_input_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="constant"):
        segment_volume(np.zeros((2, 64, 64), np.uint8), (40, 4, 4), model=tiny_model)


def test_save_result_writes_the_state_and_its_attributes(tmp_path):
    from napari_connectome.io import read_segmentation_store
    from napari_connectome.segmentation import save_result

    phantom = make_phantom((3, 64, 64), (40, 4, 4), seed=5)
    result = segment_boundaries_state(phantom.membranes.astype(np.float32), phantom.voxel_size)
    result.model = {"name": "test", "config": {"depth": 2}}
    path = save_result(result, tmp_path / "s.zarr", threshold=0.3, attrs={"input": "x"})
    stored = read_segmentation_store(path)
    assert stored.attrs["threshold"] == 0.3 and stored.attrs["input"] == "x"
    assert stored.attrs["model"]["name"] == "test"
    assert list(stored.voxel_size) == [40.0, 4.0, 4.0]
    np.testing.assert_array_equal(stored.segmentation[...], result.segmentation_at(0.3))


# ---------------------------------------------------------------- missing and shifted sections
def _damaged_phantom(seed):
    """Phantom stack with section 2 shifted by (12, -6) px and section 5 blank."""
    from scipy import ndimage as ndi

    phantom = make_phantom((8, 192, 192), (40, 8, 8), seed=seed)
    clean = ndi.gaussian_filter(phantom.membranes.astype(np.float32), (0, 1, 1))
    raw, boundaries, truth = phantom.raw.copy(), clean.copy(), phantom.neurons.copy()
    for array in (raw, boundaries, truth):
        array[2] = ndi.shift(array[2], (12, -6), order=0, cval=0)
    raw[5] = 0
    boundaries[5] = 0.0  # a blank section gets no boundaries
    return phantom, clean, raw, boundaries, truth


@pytest.mark.parametrize("seed", [2, 3])
def test_blank_and_shifted_sections_keep_objects_continuous(seed):
    from napari_connectome.core.metrics import evaluate_segmentation
    from napari_connectome.core.sections import analyse_sections

    phantom, clean, raw, boundaries, truth = _damaged_phantom(seed)
    vs = phantom.voxel_size
    found = analyse_sections(raw, smooth=3.0)
    assert found.missing.tolist() == [5]
    relative = found.shifts[2] - found.shifts[1]
    assert np.abs(relative - (-12, 6)).max() <= 3

    keep = np.arange(8) != 5  # the blank section's truth cannot be seen: score the others

    def voi(seg, gt):
        return evaluate_segmentation(seg[keep], gt[keep])["voi"]

    reference = voi(segment_boundaries_state(clean, vs).segmentation, phantom.neurons)
    off = segment_boundaries_state(boundaries.copy(), vs)
    on = segment_boundaries_state(boundaries.copy(), vs, sections=found)
    assert on.segmentation.shape == off.segmentation.shape == raw.shape
    assert (on.fragments > 0).all()
    voi_off, voi_on = voi(off.segmentation, truth), voi(on.segmentation, truth)
    assert voi_on < voi_off - 0.6  # without correction objects break at both sections
    assert voi_on < reference + 0.6
    # the missing section was bridged: its boundaries come from its neighbours
    assert on.boundaries[5].max() > 0.5
    assert on.sections["corrected"] and on.sections["missing"] == [5]


def test_aligned_graph_keeps_sizes_and_boxes_of_the_input_grid():
    from napari_connectome.core.region_graph import build_region_graph
    from napari_connectome.core.sections import analyse_sections

    phantom, _, raw, boundaries, _ = _damaged_phantom(2)
    found = analyse_sections(raw, smooth=3.0)
    assert found.shifted
    result = segment_boundaries_state(boundaries, phantom.voxel_size, sections=found)
    plain = build_region_graph(result.fragments, result.boundaries, phantom.voxel_size)
    np.testing.assert_array_equal(result.graph.fragment_sizes, plain.fragment_sizes)
    np.testing.assert_array_equal(result.graph.fragment_bboxes, plain.fragment_bboxes)
    # in-plane contacts are the same; only links between sections differ
    box = result.graph.fragment_bboxes

    def inplane(graph):
        e = graph.edges.astype(np.intp)
        same = box[e[:, 0], 0] == box[e[:, 1], 0]
        return {tuple(p) for p in graph.edges[same].tolist()}

    assert inplane(result.graph) == inplane(plain)
    assert len(result.graph.edges) != len(plain.edges) or not np.array_equal(
        result.graph.edges, plain.edges
    )


def test_sections_that_do_not_fit_are_a_clear_error():
    from napari_connectome.core.sections import analyse_sections

    phantom, _, raw, boundaries, _ = _damaged_phantom(2)
    found = analyse_sections(raw[:4], smooth=3.0)
    with pytest.raises(ValueError, match="does not match"):
        segment_boundaries_state(boundaries, phantom.voxel_size, sections=found)


def test_segment_volume_corrects_sections_by_default_and_records_them(tiny_model, tmp_path):
    from napari_connectome.io import read_segmentation_store
    from napari_connectome.segmentation import save_result

    phantom, _, raw, _, _ = _damaged_phantom(2)
    result = segment_volume(raw, phantom.voxel_size, model=tiny_model)
    assert result.segmentation.shape == result.fragments.shape == raw.shape
    assert result.sections["corrected"] and result.sections["missing"] == [5]
    assert 2 in result.sections["shifted"] and len(result.sections["shifts"]) == 8
    stored = read_segmentation_store(save_result(result, tmp_path / "s.zarr"))
    assert stored.attrs["sections"]["missing"] == [5]
    assert stored.attrs["sections"]["shifts"] == result.sections["shifts"]

    off = segment_volume(raw, phantom.voxel_size, model=tiny_model, section_correction=False)
    assert off.sections == {"corrected": False, "note": "section correction off"}
    iso = segment_volume(raw[:, :64, :64], (8, 8, 8), model=tiny_model)
    assert not iso.sections["corrected"] and "anisotropic" in iso.sections["note"]
