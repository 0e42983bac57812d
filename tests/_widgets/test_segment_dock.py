import threading
import time

import numpy as np
import pytest

from napari_connectome.segmentation import DEFAULT_THRESHOLD
from napari_connectome.synthetic import make_phantom

TIMEOUT = 60000  # ms; the CI machine may be busy


@pytest.fixture(scope="module")
def phantom():
    return make_phantom((4, 96, 96), (40, 4, 4), seed=1)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from napari_connectome.models import build_model, default_config, save_model

    config = default_config(base_channels=4, depth=2)
    return save_model(
        build_model(config), config, tmp_path_factory.mktemp("m") / "tiny.safetensors"
    )


@pytest.fixture
def fake_predict(monkeypatch):
    """Replace the model's prediction by dark-is-boundary: many fragments, instantly."""
    from napari_connectome.models import inference

    calls = []

    def predict(volume, voxel_size, model, *, progress=None, should_stop=None, **kwargs):
        image = np.asarray(volume, dtype=np.float32)
        calls.append(image.shape)
        if progress:
            progress(1, 1)
        return 1 - (image - image.min()) / (image.max() - image.min())

    monkeypatch.setattr(inference, "predict_boundaries", predict)
    return calls


def open_dock(viewer, model_path=None):
    _, dock = viewer.window.add_plugin_dock_widget("napari-connectome", "Segment")
    if model_path is not None:
        dock.model.value = "file"
        dock.model_file.value = model_path
    return dock


def run_and_wait(dock, qtbot):
    dock.controls.run_button.clicked.emit()
    qtbot.waitUntil(lambda: dock.controls.worker is None, timeout=TIMEOUT)
    return dock.controls.status.value


def add_em(viewer, phantom, **kwargs):
    kwargs = {"name": "EM", "scale": (40, 4, 4), "translate": (0, 100, 200), **kwargs}
    return viewer.add_image(phantom.raw, **kwargs)


def test_whole_volume_adds_aligned_layers_then_replaces_them(
    make_napari_viewer, qtbot, phantom, tiny_model
):
    viewer = make_napari_viewer()
    image = add_em(viewer, phantom)
    dock = open_dock(viewer, tiny_model)
    assert dock.image.value is image
    dock.scope.value = "whole volume"
    assert run_and_wait(dock, qtbot).startswith("Done")
    boundaries, labels = viewer.layers["EM boundaries"], viewer.layers["EM segmentation"]
    result = dock.result
    assert len(viewer.layers) == 3
    for layer in (boundaries, labels):
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
    assert boundaries.data.shape == phantom.raw.shape
    np.testing.assert_array_equal(labels.data, result.segmentation_at(DEFAULT_THRESHOLD))
    assert dock.threshold.enabled and not dock.controls.progress.visible
    assert "fragments" in dock.counts.value
    assert dock.image.choices == (None, image)  # the dock's own outputs are not offered
    first = dock.result
    assert run_and_wait(dock, qtbot).startswith("Done")
    assert len(viewer.layers) == 3
    assert dock.result is not first and viewer.layers["EM segmentation"] is labels


def test_threshold_slider_resegments_without_the_model(
    make_napari_viewer, qtbot, phantom, tiny_model, fake_predict
):
    viewer = make_napari_viewer()
    add_em(viewer, phantom)
    dock = open_dock(viewer, tiny_model)
    dock.scope.value = "whole volume"
    run_and_wait(dock, qtbot)
    labels = viewer.layers["EM segmentation"]
    before = labels.data.copy()
    n_before = len(np.unique(before))
    dock.threshold.value = 0.9
    assert len(fake_predict) == 1  # the slider ran no prediction
    assert not np.array_equal(labels.data, before)
    assert len(np.unique(labels.data)) <= n_before
    np.testing.assert_array_equal(labels.data, dock.result.segmentation_at(0.9))
    assert viewer.layers["EM segmentation"] is labels and len(viewer.layers) == 3
    assert "0.90" in dock.counts.value


def test_current_slice_is_placed_at_its_z(
    make_napari_viewer, qtbot, phantom, tiny_model, fake_predict
):
    viewer = make_napari_viewer()
    image = add_em(viewer, phantom)
    dock = open_dock(viewer, tiny_model)
    dock.scope.value = "current slice"
    viewer.dims.set_point(0, 2 * 40)
    assert run_and_wait(dock, qtbot).startswith("Done")
    assert fake_predict == [(96, 96)]
    assert dock.result.fragments.ndim == 2
    labels = viewer.layers["EM segmentation"]
    assert labels.data.shape == (1, 96, 96)
    np.testing.assert_allclose(labels.translate, (80, 100, 200))
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_array_equal(labels.data[0], dock.result.segmentation_at(DEFAULT_THRESHOLD))


def _zoom_in(viewer, image, zoom=6.0):
    middle = np.asarray(image.translate) + np.asarray(image.scale) * 47.5
    viewer.camera.center = tuple(middle)
    viewer.camera.zoom = zoom


def test_region_in_view_segments_only_the_visible_part(
    make_napari_viewer, qtbot, phantom, tiny_model, fake_predict
):
    viewer = make_napari_viewer()
    image = add_em(viewer, phantom)
    dock = open_dock(viewer, tiny_model)
    assert dock.scope.value == "region in view"
    viewer.dims.set_point(0, 40)
    _zoom_in(viewer, image)
    assert run_and_wait(dock, qtbot).startswith("Done")
    region, (height, width) = dock.region, viewer.canvas.size
    size = np.array([height, width]) / viewer.camera.zoom / 4  # visible size in pixels
    assert region.plane and region.start[0] == 1
    np.testing.assert_allclose(region.shape[1:], size, atol=2)
    np.testing.assert_allclose(np.add(region.start[1:], region.stop[1:]) / 2, 48, atol=1.5)
    assert dock.result.fragments.shape == region.shape[1:]
    labels = viewer.layers["EM segmentation"]
    expected = np.asarray(image.translate) + np.asarray(region.start) * image.scale
    np.testing.assert_allclose(labels.translate, expected)
    assert labels.data.shape == region.shape


def test_region_in_view_reads_only_visible_chunks(
    make_napari_viewer, qtbot, phantom, tiny_model, fake_predict
):
    import dask
    import dask.array as da

    reads = []

    def record(block, block_info=None):
        if block_info is not None and threading.current_thread() is not threading.main_thread():
            reads.append(tuple(block_info[0]["chunk-location"]))
        return block

    lazy = da.from_array(phantom.raw, chunks=(1, 32, 32)).map_blocks(
        record, dtype=phantom.raw.dtype, meta=np.array((), phantom.raw.dtype)
    )
    with dask.config.set(scheduler="synchronous"):  # blocks run in the thread asking
        viewer = make_napari_viewer()
        image = add_em(viewer, phantom, contrast_limits=(0, 255))
        image.data = lazy
        dock = open_dock(viewer, tiny_model)
        viewer.dims.set_point(0, 40)
        _zoom_in(viewer, image)
        reads.clear()
        assert run_and_wait(dock, qtbot).startswith("Done")
    region = dock.region
    wanted = {
        (1, row, col)
        for row in range(region.start[1] // 32, (region.stop[1] - 1) // 32 + 1)
        for col in range(region.start[2] // 32, (region.stop[2] - 1) // 32 + 1)
    }
    assert reads and set(reads) <= wanted
    assert len(wanted) < 9  # fewer chunks than the section has


def test_region_in_view_in_3d_takes_all_sections(
    make_napari_viewer, qtbot, phantom, tiny_model, fake_predict
):
    viewer = make_napari_viewer()
    image = add_em(viewer, phantom)
    dock = open_dock(viewer, tiny_model)
    viewer.dims.ndisplay = 3
    _zoom_in(viewer, image, zoom=4.0)
    assert run_and_wait(dock, qtbot).startswith("Done")
    region = dock.region
    assert not region.plane and (region.start[0], region.stop[0]) == (0, 4)
    assert region.shape[1] < 96 and region.shape[2] < 96
    assert fake_predict == [region.shape]
    expected = np.asarray(image.translate) + np.asarray(region.start) * image.scale
    np.testing.assert_allclose(viewer.layers["EM segmentation"].translate, expected)


def test_multiscale_image_uses_level_0(
    make_napari_viewer, qtbot, phantom, tiny_model, fake_predict
):
    viewer = make_napari_viewer()
    raw = phantom.raw
    viewer.add_image([raw, raw[:, ::2, ::2]], name="EM", multiscale=True, scale=(40, 4, 4))
    dock = open_dock(viewer, tiny_model)
    dock.scope.value = "whole volume"
    assert run_and_wait(dock, qtbot).startswith("Done")
    assert viewer.layers["EM segmentation"].data.shape == raw.shape


def test_defaults_active_image_and_voxel_size(make_napari_viewer, phantom):
    viewer = make_napari_viewer()
    first = viewer.add_image(phantom.raw, name="a", scale=(40, 4, 4))
    viewer.add_image(phantom.raw, name="b", metadata={"voxel_size_nm": (30, 5, 5)})
    viewer.layers.selection.active = first
    dock = open_dock(viewer)
    assert dock.image.value is first
    assert dock.voxel_size.value == "40, 4, 4"
    viewer.layers.selection.active = viewer.layers["b"]
    assert dock.image.value is viewer.layers["b"]
    assert dock.voxel_size.value == "30, 5, 5"
    viewer.add_labels(np.zeros((4, 96, 96), np.uint8), name="labels")
    dock2 = open_dock(viewer)  # active layer is a labels layer: the top image
    assert dock2.image.value is viewer.layers["b"]


def test_dock_on_a_2d_image(make_napari_viewer, qtbot, phantom, tiny_model):
    viewer = make_napari_viewer()
    image = viewer.add_image(phantom.raw[1], name="plane", scale=(4, 4), translate=(10, 20))
    dock = open_dock(viewer, tiny_model)
    for scope in ("current slice", "region in view"):
        dock.scope.value = scope
        assert run_and_wait(dock, qtbot).startswith("Done"), scope
        labels = viewer.layers["plane segmentation"]
        assert labels.ndim == 2 and labels.data.shape == dock.region.shape
        expected = np.asarray(image.translate) + np.asarray(dock.region.start) * 4
        np.testing.assert_allclose(labels.translate, expected)
    assert len(viewer.layers) == 3


def _assert_error(viewer, dock, qtbot, match, n_layers):
    status = run_and_wait(dock, qtbot)
    assert status.startswith("Error") and match in status, status
    assert len(viewer.layers) == n_layers
    assert dock.result is None


def test_errors_before_running(make_napari_viewer, qtbot, phantom, tiny_model, monkeypatch):
    viewer = make_napari_viewer()
    dock = open_dock(viewer, tiny_model)
    _assert_error(viewer, dock, qtbot, "no image layer", 0)
    viewer.add_image(np.random.default_rng(0).random((32, 32, 3)), name="rgb")
    assert dock.image.value is viewer.layers["rgb"]
    _assert_error(viewer, dock, qtbot, "RGB", 1)
    dock.image.value = viewer.add_image(np.ones((2, 2, 32, 32)), name="4d", scale=(1, 9, 4, 4))
    _assert_error(viewer, dock, qtbot, "4D", 2)
    dock.image.value = viewer.add_image(phantom.raw, name="EM")
    assert dock.voxel_size.value == ""
    _assert_error(viewer, dock, qtbot, "voxel size is unknown", 3)
    dock.voxel_size.value = "40, 4, 4"
    dock.model_file.value = None
    _assert_error(viewer, dock, qtbot, "model file", 3)
    from napari_connectome.models import weights

    monkeypatch.setattr(weights, "bundled_model_path", lambda: tiny_model.parent / "absent")
    dock.model.value = "bundled"
    _assert_error(viewer, dock, qtbot, "bundled model", 3)
    dock.model.value = "file"
    dock.model_file.value = tiny_model
    dock.scope.value = "region in view"
    viewer.camera.zoom = 100.0
    _assert_error(viewer, dock, qtbot, "at least 16", 3)
    viewer.camera.center = (0, -1e5, -1e5)
    _assert_error(viewer, dock, qtbot, "empty", 3)


def test_cuda_absent_is_an_error(make_napari_viewer, qtbot, phantom, tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    viewer = make_napari_viewer()
    add_em(viewer, phantom)
    dock = open_dock(viewer, tiny_model)
    assert "not available" in dict((v, k) for k, v in dock.device._default_choices)["cuda"]
    dock.device.value = "cuda"
    _assert_error(viewer, dock, qtbot, "CUDA", 1)


def test_errors_from_the_run(make_napari_viewer, qtbot, phantom, tiny_model, tmp_path):
    viewer = make_napari_viewer()
    dock = open_dock(viewer, tiny_model)
    dock.scope.value = "whole volume"
    dock.image.value = viewer.add_image(np.full((2, 40, 40), 7.0), name="flat", scale=(40, 4, 4))
    _assert_error(viewer, dock, qtbot, "constant", 1)
    holes = phantom.raw.astype(np.float32)
    holes[1, 5, 5] = np.nan
    dock.image.value = viewer.add_image(holes, name="nan", scale=(40, 4, 4))
    _assert_error(viewer, dock, qtbot, "NaN", 2)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a model")
    dock.model_file.value = bad
    _assert_error(viewer, dock, qtbot, "bad.safetensors", 2)


def test_cancel_stops_the_run(make_napari_viewer, qtbot, phantom, tiny_model, monkeypatch):
    from napari_connectome.models import PredictionCancelled, inference

    started, stopped = threading.Event(), threading.Event()

    def slow_predict(volume, voxel_size, model, *, progress=None, should_stop=None, **kw):
        progress(0, 10)
        started.set()
        deadline = time.monotonic() + 30
        while not should_stop():
            assert time.monotonic() < deadline, "should_stop never turned True"
            time.sleep(0.01)
        stopped.set()
        raise PredictionCancelled("cancelled")

    monkeypatch.setattr(inference, "predict_boundaries", slow_predict)
    viewer = make_napari_viewer()
    add_em(viewer, phantom)
    dock = open_dock(viewer, tiny_model)
    dock.controls.run_button.clicked.emit()
    worker = dock.controls.worker
    qtbot.waitUntil(started.is_set, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: dock.controls.status.value.startswith("Predicting"), timeout=TIMEOUT)
    assert dock.controls.progress.max == 1000
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT):
        dock.controls.cancel_button.clicked.emit()
    assert stopped.is_set()
    qtbot.wait(100)
    assert dock.controls.status.value == "Cancelled."
    assert dock.controls.run_button.enabled
    assert len(viewer.layers) == 1 and dock.result is None


# --- lazy multiscale layers opened through the plugin's reader ------------------------


def write_ome_image(path, image, chunks, translate=(0.0, 0.0, 0.0)):
    """Write ``image`` as a two-level NGFF 0.4 image (zarr v2), 40 x 4 x 4 nm voxels."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    for level in range(2):
        f = 2**level
        group.create_array(str(level), data=image[:, ::f, ::f], chunks=chunks)
        transforms = [
            {"type": "scale", "scale": [40.0, 4.0 * f, 4.0 * f]},
            {"type": "translation", "translation": list(translate)},
        ]
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    return path


def _chunk_of(key: str):
    """``"0/1.2.3"`` (zarr v2) or ``"0/c/1/2/3"`` (v3) -> (level, (1, 2, 3)); None for metadata."""
    level, _, rest = key.partition("/")
    parts = rest.removeprefix("c/").replace("/", ".").split(".")
    if not level.isdigit() or not all(p.isdigit() for p in parts):
        return None
    return int(level), tuple(int(p) for p in parts)


def _view_of(viewer, layer, z, size_px):
    """Centre the view on the layer's middle at section ``z``, about ``size_px`` px wide."""
    middle = np.asarray(layer.translate) + np.asarray(layer.scale) * np.asarray(
        [z, *(np.asarray(layer.data[0].shape[1:]) - 1) / 2]
    )
    viewer.dims.set_point(0, middle[0])
    viewer.camera.center = tuple(middle)
    viewer.camera.zoom = max(viewer.canvas.size) / (size_px * layer.scale[-1])


def test_ome_zarr_through_the_reader_reads_only_chunks_in_view(
    make_napari_viewer, qtbot, tmp_path, phantom, tiny_model, fake_predict, monkeypatch
):
    from zarr.storage import LocalStore

    store = write_ome_image(tmp_path / "em.ome.zarr", phantom.raw, chunks=(1, 16, 16))
    recording, reads = [False], []
    original_get = LocalStore.get

    async def counting_get(self, key, *args, **kwargs):
        if recording[0]:
            reads.append(key)
        return await original_get(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", counting_get)
    viewer = make_napari_viewer()
    [image] = viewer.open(str(store), plugin="napari-connectome")
    assert image.multiscale and len(image.data) == 2
    dock = open_dock(viewer, tiny_model)
    assert dock.image.value is image and dock.voxel_size.value == "40, 4, 4"
    _view_of(viewer, image, z=2, size_px=40)
    show = type(dock)._show

    def stop_recording_then_show(self, *args):
        recording[0] = False  # napari may redraw from here on; the dock has read what it needs
        show(self, *args)

    monkeypatch.setattr(type(dock), "_show", stop_recording_then_show)
    recording[0] = True
    assert run_and_wait(dock, qtbot).startswith("Done")
    region = dock.region
    assert region.plane and region.start[0] == 2 and max(region.shape[1:]) <= 42
    wanted = {
        (2, row, col)
        for row in range(region.start[1] // 16, (region.stop[1] - 1) // 16 + 1)
        for col in range(region.start[2] // 16, (region.stop[2] - 1) // 16 + 1)
    }
    chunks = [_chunk_of(key) for key in reads]
    assert chunks and None not in chunks, reads  # chunk reads only, no metadata
    assert {level for level, _ in chunks} == {0}  # the dock reads level 0
    assert {index for _, index in chunks} == wanted  # exactly the chunks under the view
    assert len(chunks) == len(wanted)  # each once
    assert len(wanted) <= 16 < 4 * 6 * 6  # a fraction of the volume's 144 chunks
    assert fake_predict == [region.shape[1:]]


def test_multiscale_ome_zarr_opened_by_the_plugin_segments_the_visible_region(
    make_napari_viewer, qtbot, tmp_path, tiny_model
):
    from napari_connectome.synthetic import make_phantom

    raw = make_phantom((3, 192, 192), (40, 4, 4), seed=2).raw
    store = write_ome_image(
        tmp_path / "em.ome.zarr", raw, chunks=(1, 64, 64), translate=(0.0, 400.0, -200.0)
    )
    viewer = make_napari_viewer()
    [image] = viewer.open(str(store), plugin="napari-connectome")
    assert image.multiscale
    np.testing.assert_allclose(image.scale, (40, 4, 4))
    np.testing.assert_allclose(image.translate, (0, 400, -200))
    dock = open_dock(viewer, tiny_model)
    assert dock.scope.value == "region in view"
    _view_of(viewer, image, z=1, size_px=64)
    assert run_and_wait(dock, qtbot).startswith("Done")
    region = dock.region
    assert region.plane and region.start[0] == 1
    assert 60 <= max(region.shape[1:]) <= 66 and min(region.shape[1:]) >= 16
    np.testing.assert_allclose(np.add(region.start[1:], region.stop[1:]) / 2, 96, atol=1.5)
    assert dock.result.fragments.shape == region.shape[1:]
    labels, boundaries = viewer.layers["em segmentation"], viewer.layers["em boundaries"]
    expected = np.asarray(image.translate) + np.asarray(region.start) * image.scale
    for layer in (labels, boundaries):
        np.testing.assert_allclose(layer.translate, expected)
        np.testing.assert_allclose(layer.scale, image.scale)
        assert layer.data.shape == region.shape
    np.testing.assert_array_equal(labels.data[0], dock.result.segmentation_at(DEFAULT_THRESHOLD))


def test_whole_volume_beyond_the_memory_limit_is_refused(
    make_napari_viewer, qtbot, phantom, tiny_model, monkeypatch
):
    from napari_connectome._widgets import _scope

    monkeypatch.setattr(_scope, "MAX_DOCK_VOXELS", 10_000)
    viewer = make_napari_viewer()
    add_em(viewer, phantom)
    dock = open_dock(viewer, tiny_model)
    dock.scope.value = "whole volume"
    _assert_error(viewer, dock, qtbot, "more than a dock reads", 1)
    assert "blockwise" in dock.controls.status.value
