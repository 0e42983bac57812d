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
