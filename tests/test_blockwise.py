"""Blockwise segmentation on dask: stitching correctness, resume, a killed worker, bad input."""

import os
import signal
import threading
import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_connectome import blockwise_work
from napari_connectome.blockwise import (
    BlockwiseError,
    check_block_size,
    check_scheduler,
    segment_blockwise,
)
from napari_connectome.blockwise_work import BlockwisePlan, run_block, work_folder
from napari_connectome.core.metrics import variation_of_information
from napari_connectome.core.stitching import block_grid
from napari_connectome.io import read_segmentation_store
from napari_connectome.segmentation import segment_boundaries_state
from napari_connectome.synthetic import make_phantom

VOXEL = (40.0, 4.0, 4.0)
CONFIG = {"context_px": 16, "pixel_size_nm": 8.0}  # halo 0 x 32 x 32 voxels


def _voi(a, b):
    return sum(variation_of_information(np.asarray(a, np.int64), np.asarray(b, np.int64)))


@pytest.fixture(scope="module")
def membranes(tmp_path_factory):
    """A phantom whose 'raw' is its blurred membranes (255 = membrane), saved as .npz."""
    path = tmp_path_factory.mktemp("blockwise") / "membranes.npz"
    return path, _membrane_volume(path, (6, 192, 192), VOXEL)


@pytest.fixture
def boundaries_are_raw(monkeypatch):
    """Workers in this process use the raw volume / 255 as the boundary map (no model)."""
    monkeypatch.setattr(
        blockwise_work,
        "_predict",
        lambda plan, raw, block: raw.astype(np.float32) / np.float32(255),
    )


def _blockwise(path, out, block_size, **kw):
    kw.setdefault("scheduler", "threads")
    kw.setdefault("workers", 2)
    return segment_blockwise(
        str(path), out, voxel_size=VOXEL, model_config=CONFIG, block_size=block_size, **kw
    )


def _membrane_volume(path, shape, voxel_size, seed=4):
    flat = len(shape) == 2
    phantom = make_phantom(
        (1, *shape) if flat else shape, VOXEL if flat else voxel_size, seed=seed
    )
    membranes = phantom.membranes[0] if flat else phantom.membranes
    sigma = (0, 1, 1) if len(shape) == 3 and voxel_size[0] > 2 * voxel_size[1] else 1
    bnd = ndi.gaussian_filter(membranes.astype(np.float32), sigma) * 1.5
    raw = np.rint(np.clip(bnd, 0, 1) * 255).astype(np.uint8)
    np.savez(path, raw=raw, voxel_size=np.array(voxel_size))
    return raw


@pytest.mark.parametrize(
    ("voxel_size", "shape", "block_size"),
    [
        (VOXEL, (6, 192, 192), (6, 64, 64)),  # per-section fragments, cut in y and x
        (VOXEL, (6, 192, 192), (2, 96, 80)),  # ... and in z, uneven blocks
        ((10.0, 10.0, 10.0), (48, 96, 96), (16, 32, 40)),  # 3D fragments, halo in z too
        ((4.0, 4.0), (256, 256), (100, 128)),  # a 2D image
    ],
)
def test_blockwise_matches_the_whole_volume(
    tmp_path, boundaries_are_raw, voxel_size, shape, block_size
):
    path = tmp_path / "membranes.npz"
    raw = _membrane_volume(path, shape, voxel_size)
    whole = segment_boundaries_state(raw.astype(np.float32) / np.float32(255), voxel_size)
    result = segment_blockwise(
        str(path),
        tmp_path / "seg.zarr",
        voxel_size=voxel_size,
        model_config=CONFIG,
        block_size=block_size,
        scheduler="threads",
        workers=2,
    )
    stored = read_segmentation_store(tmp_path / "seg.zarr")
    seg = np.asarray(stored.segmentation[...])
    assert _voi(whole.segmentation, seg) < 0.05
    assert result["blocks"] == len(block_grid(raw.shape, block_size)) > 1
    # ids are global and consecutive, the stored graph and tree are the stitched ones
    fragments = np.asarray(stored.fragments[...])
    assert set(np.unique(fragments)) == set(range(1, stored.tree.n_fragments + 1))
    assert stored.graph.n_edges == result["graph"].n_edges
    assert np.array_equal(stored.tree.merge_a, result["tree"].merge_a)
    assert not work_folder(tmp_path / "seg.zarr").exists()  # cleaned up


def test_blockwise_with_the_model_matches_the_whole_volume(tmp_path):
    """The bundled model: blockwise boundaries match whole-volume prediction to 8 bits,
    and the whole-volume pipeline run on them gives the blockwise segmentation."""
    from napari_connectome.models import bundled_model_path, predict_boundaries

    if not bundled_model_path().exists():
        pytest.skip("the bundled model is not installed")
    phantom = make_phantom((4, 256, 256), VOXEL, seed=3)
    path = tmp_path / "phantom.npz"
    np.savez(path, raw=phantom.raw, voxel_size=np.array(VOXEL))
    segment_blockwise(
        str(path),
        tmp_path / "seg.zarr",
        voxel_size=VOXEL,
        device="cpu",
        block_size=(2, 128, 128),
        scheduler="threads",
        workers=2,
    )
    stored = read_segmentation_store(tmp_path / "seg.zarr")
    boundaries = stored.load_boundaries()
    whole = predict_boundaries(phantom.raw, VOXEL, device="cpu")
    assert np.abs(boundaries - whole).max() < 0.01  # halo and whole-section normalisation
    reference = segment_boundaries_state(boundaries, VOXEL)
    assert _voi(reference.segmentation, stored.segmentation[...]) < 0.05


def test_objects_crossing_block_faces_join(tmp_path, boundaries_are_raw):
    """A cell cut by every block face comes back as one segment (and one fragment)."""
    raw = np.zeros((3, 96, 96), np.uint8)
    raw[:, 46:50, :] = 255  # two cells: y < 46 and y >= 50, both crossing all faces
    path = tmp_path / "two.npz"
    np.savez(path, raw=raw, voxel_size=np.array(VOXEL))
    _blockwise(path, tmp_path / "two.zarr", (1, 32, 32))
    stored = read_segmentation_store(tmp_path / "two.zarr")
    seg = np.asarray(stored.segmentation[...])
    assert len(np.unique(seg[:, :45])) == 1 and len(np.unique(seg[:, 51:])) == 1
    assert seg[0, 0, 0] != seg[0, -1, -1]


def test_rerun_resumes_from_finished_blocks(tmp_path, membranes, boundaries_are_raw):
    path, raw = membranes
    reference = _blockwise(path, tmp_path / "ref.zarr", (3, 96, 96))
    out = tmp_path / "seg.zarr"
    # an earlier run that stopped after two blocks (and left a half-written mark)
    first = _blockwise(path, tmp_path / "probe.zarr", (3, 96, 96))
    plan = BlockwisePlan(
        input=str(path),
        shape=raw.shape,
        voxel_size=VOXEL,
        block_size=(3, 96, 96),
        halo=first["halo"],
        model="bundled",
        model_sha256="",
        device="cpu",
        work=str(work_folder(out)),
    )
    from napari_connectome.blockwise_work import prepare_work

    prepare_work(plan, (1, 512, 512))
    blocks = block_grid(raw.shape, plan.block_size, plan.halo)
    for block in blocks[:2]:
        run_block(plan, block)
    (work_folder(out) / "blocks" / ".b1_1_1.123.tmp.npz").write_bytes(b"partial")
    result = _blockwise(path, out, (3, 96, 96))
    assert result["blocks_resumed"] == 2
    assert sum(w["blocks"] for w in result["workers"].values()) == len(blocks) - 2
    a = read_segmentation_store(out)
    b = read_segmentation_store(tmp_path / "ref.zarr")
    assert np.array_equal(np.asarray(a.fragments[...]), np.asarray(b.fragments[...]))
    assert np.array_equal(np.asarray(a.segmentation[...]), np.asarray(b.segmentation[...]))
    assert reference["tree"].n_fragments == result["tree"].n_fragments


def test_other_settings_start_again(tmp_path, membranes, boundaries_are_raw):
    path, _ = membranes
    out = tmp_path / "seg.zarr"
    work = work_folder(out)
    work.mkdir()
    (work / "manifest.json").write_text('{"block_size": [1, 1, 1]}')
    result = _blockwise(path, out, (6, 96, 96))
    assert result["blocks_resumed"] == 0
    assert any("other settings" in note for note in result["notes"])


def test_a_failing_block_is_retried_then_reported(tmp_path, membranes, monkeypatch):
    path, _ = membranes
    tries = []

    def flaky(plan, raw, block):
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("transient failure")
        return raw.astype(np.float32) / np.float32(255)

    monkeypatch.setattr(blockwise_work, "_predict", flaky)
    _blockwise(path, tmp_path / "ok.zarr", (6, 192, 192), workers=1, retries=1)
    assert len(tries) == 2

    def broken(plan, raw, block):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(blockwise_work, "_predict", broken)
    with pytest.raises(BlockwiseError, match="disk on fire.*rerun the same command"):
        _blockwise(path, tmp_path / "bad.zarr", (6, 192, 192), workers=1, retries=0)
    assert not (tmp_path / "bad.zarr").exists()
    assert work_folder(tmp_path / "bad.zarr").is_dir()  # kept for a rerun


def test_a_killed_worker_does_not_lose_the_run(tmp_path, membranes):
    """SIGKILL a worker process mid-run: the scheduler reruns its block elsewhere."""
    from distributed import Client, LocalCluster

    path, raw = membranes
    model = tmp_path / "tiny.safetensors"
    _tiny_model(model)
    out = tmp_path / "seg.zarr"
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    try:
        pids = list(client.run(os.getpid).values())
        outcome = {}

        def run():
            try:
                outcome["result"] = segment_blockwise(
                    str(path),
                    out,
                    voxel_size=VOXEL,
                    model=str(model),
                    device="cpu",
                    block_size=(1, 96, 96),
                    scheduler=cluster.scheduler_address,
                )
            except BaseException as error:  # pragma: no cover - reported below
                outcome["error"] = error

        thread = threading.Thread(target=run)
        thread.start()
        marks = work_folder(out) / "blocks"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            marks.is_dir()
            and any(p.suffix == ".npz" and not p.name.startswith(".") for p in marks.iterdir())
        ):
            time.sleep(0.02)
        os.kill(pids[0], signal.SIGKILL)  # mid-run: blocks are still pending
        thread.join(timeout=300)
        assert "error" not in outcome, outcome.get("error")
        result = outcome["result"]
        assert result["blocks"] == 24
    finally:
        client.close()
        cluster.close()
    stored = read_segmentation_store(out)
    assert stored.tree.n_fragments == result["tree"].n_fragments


def _tiny_model(path):
    import torch

    from napari_connectome.models import build_model, default_config, save_model

    torch.manual_seed(0)
    config = default_config(base_channels=4, depth=2)
    save_model(build_model(config).eval(), config, path)


def test_block_size_smaller_than_the_context_is_refused():
    with pytest.raises(BlockwiseError, match=r"smaller than the model's context.*Y: 20 < 96"):
        check_block_size((4, 20, 200), (10, 500, 500), (0, 96, 96))
    with pytest.raises(BlockwiseError, match="needs 3 numbers"):
        check_block_size((4, 200), (10, 500, 500), (0, 96, 96))
    # a volume smaller than the context is one block along that axis: fine
    assert check_block_size((4, 64, 64), (10, 64, 64), (0, 96, 96)) == (4, 64, 64)


def test_unreachable_scheduler_is_refused_quickly():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.monotonic()
    with pytest.raises(BlockwiseError, match="cannot reach a dask scheduler.*dask scheduler"):
        check_scheduler(f"tcp://127.0.0.1:{port}")
    assert time.monotonic() - start < 10
    with pytest.raises(BlockwiseError, match="tcp://HOST:PORT"):
        check_scheduler("udp://somewhere")


@pytest.mark.parametrize("method", [None, {"method": "meanstd"}])
def test_whole_section_normalisation_is_the_models(method):
    from napari_connectome.models.tiling import normalize_plane

    rng = np.random.default_rng(0)
    volume = rng.gamma(2.0, 30.0, (3, 40, 50)).astype(np.float32)
    volume[1] = 7.0  # a constant section
    stats = blockwise_work.section_normalization(volume, method)
    for plane, (low, span) in zip(volume, stats, strict=True):
        ours = np.clip((plane - low) / span, 0, 1) if span else np.zeros_like(plane)
        assert np.allclose(ours, normalize_plane(plane, method), atol=1e-5)


def test_the_store_is_laid_out_as_the_whole_volume_writer_does(
    tmp_path, membranes, boundaries_are_raw
):
    """Volumes written by the workers: same arrays, chunks, codecs and attributes as
    ``write_segmentation_store`` gives the same content."""
    import zarr

    from napari_connectome.io import write_segmentation_store

    path, _ = membranes
    out = tmp_path / "seg.zarr"
    # blocks that do not line up with the store's 1 x 512 x 512 chunks
    result = _blockwise(path, out, (4, 80, 112))
    stored = read_segmentation_store(out)
    reference = tmp_path / "reference.zarr"
    write_segmentation_store(
        reference,
        boundaries=np.asarray(stored.boundaries[...]),
        fragments=np.asarray(stored.fragments[...]),
        graph=result["graph"],
        tree=result["tree"],
        attrs={k: v for k, v in stored.attrs.items() if k != "created"},
    )
    ours, theirs = zarr.open_group(str(out), mode="r"), zarr.open_group(str(reference), mode="r")
    assert {k: v for k, v in ours.attrs.items() if k != "created"} == {
        k: v for k, v in theirs.attrs.items() if k != "created"
    }
    for name in ("boundaries", "fragments", "segmentation"):
        a, b = ours[name], theirs[name]
        assert (a.dtype, a.chunks, a.shape) == (b.dtype, b.chunks, b.shape), name
        assert a.compressors == b.compressors, name
        assert dict(a.attrs) == dict(b.attrs), name
        assert np.array_equal(a[...], b[...]), name
    for group in ("region_graph", "merge_tree"):
        assert sorted(ours[group].array_keys()) == sorted(theirs[group].array_keys())
        for name in ours[group].array_keys():
            assert np.array_equal(ours[group][name][...], theirs[group][name][...]), name
        assert dict(ours[group].attrs) == dict(theirs[group].attrs)
    assert not any(p.name.startswith(".seg.zarr") for p in tmp_path.iterdir())


def test_write_regions_are_whole_chunks_covering_the_volume():
    from napari_connectome.blockwise_write import write_regions

    shape, chunks = (7, 300, 260), (2, 64, 128)
    regions = write_regions(shape, chunks, (3, 100, 100))
    count = np.zeros(shape, np.int64)
    for region in regions:
        count[region] += 1
        for s, c, n in zip(region, chunks, shape, strict=True):
            assert s.start % c == 0 and (s.stop % c == 0 or s.stop == n)
    assert (count == 1).all()
    assert [r[0] for r in regions[:1]] == [slice(0, 4)]  # 3 rounded up to whole chunks


def test_a_failing_write_is_reported_and_the_blocks_kept(
    tmp_path, membranes, boundaries_are_raw, monkeypatch
):
    from napari_connectome import blockwise_write

    path, _ = membranes

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(blockwise_write, "write_region", broken)
    out = tmp_path / "seg.zarr"
    with pytest.raises(BlockwiseError, match="writing the store failed.*disk full.*rerun"):
        _blockwise(path, out, (6, 96, 96), retries=0)
    assert not out.exists()
    assert not any(p.name.startswith(".seg.zarr.tmp") for p in tmp_path.iterdir())
    monkeypatch.undo()
    monkeypatch.setattr(
        blockwise_work,
        "_predict",
        lambda plan, raw, block: raw.astype(np.float32) / np.float32(255),
    )
    result = _blockwise(path, out, (6, 96, 96))
    assert result["blocks_resumed"] == result["blocks"] == 4
    assert read_segmentation_store(out).tree.n_fragments == result["tree"].n_fragments


def test_test_time_views_reach_the_model_and_are_checked(tmp_path, membranes, monkeypatch):
    from napari_connectome.models.inference import DEFAULT_AUGMENT

    assert BlockwisePlan("", (), (), (), (), "", "", "", "").augment == DEFAULT_AUGMENT
    path, _ = membranes
    seen = []

    def predict(plan, raw, block):
        seen.append(plan.augment)
        return raw.astype(np.float32) / np.float32(255)

    monkeypatch.setattr(blockwise_work, "_predict", predict)
    result = _blockwise(path, tmp_path / "seg.zarr", (6, 96, 96), augment=2)
    assert set(seen) == {2} and result["augment"] == 2
    assert read_segmentation_store(tmp_path / "seg.zarr").attrs["model"]["augment"] == 2
    with pytest.raises(BlockwiseError, match="augment must be one of"):
        _blockwise(path, tmp_path / "bad.zarr", (6, 96, 96), augment=3)
    assert not work_folder(tmp_path / "bad.zarr").exists()


def _child_peaks(_=None):
    import resource

    from napari_connectome.blockwise_work import peak_resident_bytes

    return peak_resident_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_a_spawned_worker_reports_its_own_peak_not_its_parents():
    import multiprocessing
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM is Linux's")
    big = np.ones(400 * 2**20, dtype=np.uint8)  # the parent's peak grows by 400 MB
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        own, inherited = pool.apply(_child_peaks)
    del big
    assert inherited > 400 * 2**20  # ru_maxrss survives the spawn's execve
    assert own < inherited - 300 * 2**20
