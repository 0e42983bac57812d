import io

import numpy as np
import pytest
import torch
import zarr

from napari_connectome.cli import main
from napari_connectome.cli._common import ProgressLine
from napari_connectome.core.agglomeration import MergeTree, segment_table
from napari_connectome.io import open_volume, read_segmentation_store
from napari_connectome.io import segmentation_store as store_module
from napari_connectome.models import build_model, bundled_model_path, default_config, save_model
from napari_connectome.segmentation import DEFAULT_THRESHOLD
from napari_connectome.synthetic import make_phantom

VOXEL = (40.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random network whose output varies (batch norm calibrated, head scaled)."""
    torch.manual_seed(0)
    config = default_config(base_channels=4, depth=2)
    model = build_model(config).train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    raw = make_phantom((1, 128, 128), VOXEL, seed=5).raw[0]
    with torch.no_grad():
        model(torch.from_numpy(raw / 255.0).float()[None, None])
        model.head.weight.mul_(10)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(model.eval(), config, path)
    return path


@pytest.fixture(scope="module")
def phantom_npz(tmp_path_factory):
    phantom = make_phantom((4, 96, 96), VOXEL, seed=2)
    path = tmp_path_factory.mktemp("data") / "phantom.npz"
    np.savez(path, raw=phantom.raw, voxel_size=np.array(VOXEL))
    return path


def _npz(tmp_path, name="vol.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _run(*args):
    return main(["segment", *map(str, args)])


def _nothing_written(folder):
    return not any(p.suffix == ".zarr" or ".tmp-" in p.name for p in folder.iterdir())


def test_segment_end_to_end(tmp_path, tiny_model, phantom_npz, capsys):
    out = tmp_path / "seg.zarr"
    assert _run(phantom_npz, out, "--model", tiny_model, "--device", "cpu") == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "fragments" in captured.out
    assert f"at threshold {DEFAULT_THRESHOLD:g}" in captured.out
    assert "predicting boundaries" in captured.err and "%" in captured.err

    root = zarr.open_group(str(out), mode="r")  # plain zarr, no package code
    assert (out / ".zgroup").is_file()
    assert root["boundaries"].dtype == np.uint8
    assert root["fragments"].dtype == np.uint64
    assert root["segmentation"].dtype == np.uint32
    for name in ("boundaries", "fragments", "segmentation"):
        assert root[name].shape == (4, 96, 96)
    attrs = dict(root.attrs)
    assert attrs["voxel_size"] == list(VOXEL)
    assert attrs["voxel_size_from"] == "metadata"
    assert attrs["threshold"] == DEFAULT_THRESHOLD
    assert attrs["model"]["name"] == str(tiny_model.resolve())
    assert attrs["model"]["config"]["base_channels"] == 4
    assert attrs["input"].endswith("phantom.npz:raw")
    assert attrs["axes"] == ["z", "y", "x"]
    assert attrs["napari_connectome_version"] and attrs["created"]

    fragments = root["fragments"][...]
    mt = root["merge_tree"]
    tree = MergeTree(
        *(mt[k][...] for k in ("merge_a", "merge_b", "merge_score", "merge_area")),
        n_fragments=mt.attrs["n_fragments"],
    )
    assert fragments.max() == tree.n_fragments > 1 and len(tree) > 0
    table = segment_table(tree, tree.n_fragments, DEFAULT_THRESHOLD)
    segmentation = root["segmentation"][...]
    np.testing.assert_array_equal(segmentation, table[fragments])
    assert (segmentation > 0).all()  # every voxel of tissue has a segment
    stored = read_segmentation_store(out)
    assert stored.graph.n_edges == root["region_graph/edges"].shape[0]
    assert open_volume(f"{out}:segmentation").voxel_size == VOXEL


def test_threshold_and_voxel_size_flags(tmp_path, tiny_model, phantom_npz, capsys):
    out = tmp_path / "seg.zarr"
    args = ["--model", tiny_model, "--threshold", "0.2", "--voxel-size", "30", "5", "5"]
    assert _run(phantom_npz, out, *args) == 0
    stored = read_segmentation_store(out)
    assert stored.voxel_size == (30.0, 5.0, 5.0)  # the flag wins over the metadata
    assert stored.attrs["voxel_size_from"] == "--voxel-size"
    assert stored.threshold == 0.2
    np.testing.assert_array_equal(stored.segmentation[...], stored.segmentation_at(0.2))
    assert "at threshold 0.2" in capsys.readouterr().out


def test_section_correction_is_on_by_default_and_can_be_turned_off(
    tmp_path, tiny_model, phantom_npz, capsys
):
    on, off = tmp_path / "on.zarr", tmp_path / "off.zarr"
    assert _run(phantom_npz, on, "--model", tiny_model) == 0
    assert "sections      " in capsys.readouterr().out
    assert read_segmentation_store(on).attrs["sections"]["corrected"] is True
    assert _run(phantom_npz, off, "--model", tiny_model, "--no-section-correction") == 0
    assert "section correction off" in capsys.readouterr().out
    assert read_segmentation_store(off).attrs["sections"] == {
        "corrected": False,
        "note": "section correction off",
    }


def test_2d_image_with_voxel_size_flag(tmp_path, tiny_model, phantom_npz):
    raw = np.load(phantom_npz)["raw"][0]
    src = _npz(tmp_path, raw=raw)
    out = tmp_path / "seg.zarr"
    assert _run(src, out, "--model", tiny_model, "--voxel-size", "4", "4") == 0
    stored = read_segmentation_store(out)
    assert stored.shape == (96, 96) and stored.attrs["axes"] == ["y", "x"]


def test_volume_smaller_than_a_tile_works(tmp_path, tiny_model):
    raw = np.random.default_rng(0).integers(0, 255, (2, 20, 24), dtype=np.uint8)
    src = _npz(tmp_path, raw=raw, voxel_size=np.array(VOXEL))
    out = tmp_path / "seg.zarr"
    assert _run(src, out, "--model", tiny_model) == 0
    assert read_segmentation_store(out).shape == (2, 20, 24)


def test_missing_voxel_size(tmp_path, tiny_model, phantom_npz, capsys):
    src = _npz(tmp_path, raw=np.load(phantom_npz)["raw"])
    assert _run(src, tmp_path / "seg.zarr", "--model", tiny_model) == 2
    err = capsys.readouterr().err
    assert "no voxel size" in err and "--voxel-size Z Y X" in err
    assert _run(src, tmp_path / "seg.zarr", "--voxel-size", "4", "4") == 2
    assert "needs 3 numbers" in capsys.readouterr().err
    assert _run(src, tmp_path / "seg.zarr", "--voxel-size", "40", "0", "4") == 2
    assert "positive" in capsys.readouterr().err
    assert _nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 3, 32, 32), np.uint8) + np.arange(32, dtype=np.uint8), "grayscale"),
        (np.zeros((64, 64, 3), np.uint8) + np.arange(64, dtype=np.uint8)[:, None], "channel"),
        (np.zeros((0, 32, 32), np.uint8), "empty"),
        (np.full((3, 32, 32), 7, np.uint8), "constant"),
    ],
    ids=["4d", "rgb", "empty", "constant"],
)
def test_bad_volumes(tmp_path, tiny_model, capsys, array, message):
    src = _npz(tmp_path, raw=array)
    status = _run(src, tmp_path / "seg.zarr", "--model", tiny_model, "--voxel-size", "4", "4")
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-connectome segment: error:") and message in err
    assert err.count("\n") == 1  # one clear message, no traceback
    assert _nothing_written(tmp_path)


def test_nan_volume(tmp_path, tiny_model, capsys):
    raw = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    raw[1, 5, 5] = np.nan
    src = _npz(tmp_path, raw=raw, voxel_size=np.array(VOXEL))
    assert _run(src, tmp_path / "seg.zarr", "--model", tiny_model) == 2
    err = capsys.readouterr().err
    assert "NaN" in err and "section 1" in err
    assert _nothing_written(tmp_path)


def test_bad_model_file(tmp_path, phantom_npz, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a model at all")
    assert _run(phantom_npz, tmp_path / "seg.zarr", "--model", bad) == 2
    assert "bad.safetensors" in capsys.readouterr().err
    assert _run(phantom_npz, tmp_path / "seg.zarr", "--model", tmp_path / "none.pt") == 2
    assert "not found" in capsys.readouterr().err
    assert _nothing_written(tmp_path)


def test_output_checks_come_first(tmp_path, tiny_model, phantom_npz, capsys):
    out = tmp_path / "seg.zarr"
    assert _run(phantom_npz, out, "--model", tiny_model) == 0
    before = read_segmentation_store(out).attrs["created"]
    capsys.readouterr()
    # the input does not even exist: the output is refused before anything is read
    assert _run(tmp_path / "missing.npz", out) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert _run(phantom_npz, tmp_path / "seg.npz", "--model", tiny_model) == 2
    assert "must end in .zarr" in capsys.readouterr().err
    assert _run(f"{out}:boundaries", out, "--overwrite", "--voxel-size", "40", "4", "4") == 2
    assert "holds the input" in capsys.readouterr().err
    assert read_segmentation_store(out).attrs["created"] == before
    args = ["--model", tiny_model, "--threshold", "0.1", "--overwrite"]
    assert _run(phantom_npz, out, *args) == 0
    assert read_segmentation_store(out).threshold == 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.zarr"]


def test_cancel_while_predicting(tmp_path, tiny_model, phantom_npz, capsys, monkeypatch):
    def interrupt(fraction, message):
        if fraction > 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressLine, "__call__", lambda self, f, m: interrupt(f, m))
    assert _run(phantom_npz, tmp_path / "seg.zarr", "--model", tiny_model) == 130
    assert "cancelled" in capsys.readouterr().err
    assert _nothing_written(tmp_path)


def test_cancel_while_writing(tmp_path, tiny_model, phantom_npz, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module, "_write_dataclass", interrupt)
    assert _run(phantom_npz, tmp_path / "seg.zarr", "--model", tiny_model) == 130
    assert "cancelled" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_progress_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = ProgressLine(stream, width=10)
    bar(0.0, "predicting boundaries 0/25")
    bar(0.52, "predicting boundaries 13/25")
    bar(1.0, "written")
    bar.close()
    text = stream.getvalue()
    assert "\r[#####.....]  52% predicting boundaries 13/25" in text
    assert text.count("\n") == 1 and text.endswith("\n")


def test_progress_in_a_log_is_a_few_plain_lines():
    stream = io.StringIO()
    bar = ProgressLine(stream)
    for done in range(101):
        bar(0.8 * done / 100, f"predicting boundaries {done}/100")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert 5 <= len(lines) <= 12 and "\r" not in stream.getvalue()


@pytest.mark.skipif(not bundled_model_path().exists(), reason="bundled model not installed")
def test_segment_with_the_bundled_model(tmp_path, phantom_npz):
    out = tmp_path / "seg.zarr"
    assert _run(phantom_npz, out) == 0
    stored = read_segmentation_store(out)
    assert stored.attrs["model"]["name"] == "bundled"
    assert stored.tree.n_fragments > 10


# ------------------------------------------------------------------ --blockwise


def test_blockwise_writes_the_same_store_layout(tmp_path, tiny_model, phantom_npz, capsys):
    out = tmp_path / "seg.zarr"
    args = (phantom_npz, out, "--model", tiny_model, "--device", "cpu", "--blockwise")
    assert _run(*args, "--block-size", "2", "48", "48", "--scheduler", "threads") == 0
    captured = capsys.readouterr()
    assert "(blockwise)" in captured.out and "blocks        8 of 2 x 48 x 48" in captured.out
    assert "blocks 8/8" in captured.err
    root = zarr.open_group(str(out), mode="r")
    whole = tmp_path / "whole.zarr"
    assert _run(phantom_npz, whole, "--model", tiny_model, "--device", "cpu") == 0
    reference = zarr.open_group(str(whole), mode="r")
    assert sorted(root.array_keys()) == sorted(reference.array_keys())
    assert sorted(root.group_keys()) == sorted(reference.group_keys())
    for name in ("boundaries", "fragments", "segmentation"):
        assert root[name].shape == reference[name].shape
        assert root[name].dtype == reference[name].dtype
        assert root[name].chunks == reference[name].chunks
    stored = read_segmentation_store(out)
    assert stored.attrs["blockwise"]["block_size"] == [2, 48, 48]
    assert stored.attrs["model"]["sha256"] == reference.attrs["model"]["sha256"]
    table = segment_table(stored.tree, stored.tree.n_fragments, stored.threshold)
    assert np.array_equal(np.asarray(root["segmentation"][...]), table[root["fragments"][...]])
    assert not any(".blockwise" in p.name for p in tmp_path.iterdir())


def test_blockwise_bad_input_fails_before_any_work(tmp_path, tiny_model, phantom_npz, capsys):
    out = tmp_path / "seg.zarr"
    common = (phantom_npz, out, "--model", tiny_model, "--device", "cpu", "--blockwise")
    assert _run(*common, "--block-size", "2", "4", "48") == 2
    assert "smaller than the model's context" in capsys.readouterr().err
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _run(*common, "--scheduler", f"tcp://127.0.0.1:{port}") == 2
    assert "cannot reach a dask scheduler" in capsys.readouterr().err
    assert _run(*common, "--workers", "0") == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    out.mkdir()
    (out / ".zgroup").write_text("{}")
    assert _run(*common) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert not any(".blockwise" in p.name for p in tmp_path.iterdir())
    assert _run(phantom_npz, tmp_path / "x.zarr", "--block-size", "2", "48", "48") == 2
    assert "need --blockwise" in capsys.readouterr().err


def test_segment_with_synapses_adds_them_to_the_store(tmp_path, tiny_model, phantom_npz, capsys):
    from napari_connectome.io.synapse_store import has_synapses, read_synapse_store

    out = tmp_path / "seg.zarr"
    assert _run(phantom_npz, out, "--model", tiny_model, "--synapses") == 0
    assert "synapses      " in capsys.readouterr().out
    assert has_synapses(out)
    stored = read_synapse_store(out)
    assert stored.labels.shape == (4, 96, 96)


def test_synapses_with_blockwise_is_refused_before_any_work(tmp_path, tiny_model, phantom_npz):
    out = tmp_path / "seg.zarr"
    assert _run(phantom_npz, out, "--model", tiny_model, "--synapses", "--blockwise") == 2
    assert _nothing_written(tmp_path)


def test_augment_flag_reaches_the_store_and_matches_the_model_choices(
    tmp_path, tiny_model, phantom_npz, capsys
):
    from napari_connectome.cli import _segment
    from napari_connectome.models import inference

    assert _segment.AUGMENT_CHOICES == inference.AUGMENT_CHOICES
    assert _segment.DEFAULT_AUGMENT == inference.DEFAULT_AUGMENT
    out = tmp_path / "one_view.zarr"
    assert (
        main(["segment", str(phantom_npz), str(out), "--model", str(tiny_model), "--augment", "1"])
        == 0
    )
    assert zarr.open_group(str(out), mode="r").attrs["model"]["augment"] == 1
    default = tmp_path / "four_views.zarr"
    assert main(["segment", str(phantom_npz), str(default), "--model", str(tiny_model)]) == 0
    four = zarr.open_group(str(default), mode="r")
    assert four.attrs["model"]["augment"] == 4
    one = zarr.open_group(str(out), mode="r")
    assert not np.array_equal(one["boundaries"][...], four["boundaries"][...])
    with pytest.raises(SystemExit):
        main(["segment", str(phantom_npz), str(tmp_path / "x.zarr"), "--augment", "3"])
    assert "invalid choice" in capsys.readouterr().err
