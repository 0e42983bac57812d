import argparse

import numpy as np
import pytest

from napari_connectome.cli._common import CommandError
from napari_connectome.cli._synapses import (
    add_synapse_arguments,
    check_synapse_arguments,
    run_synapse_detection,
)
from napari_connectome.core.synapses import partner_defaults
from napari_connectome.io.synapse_store import has_synapses, read_synapse_store
from napari_connectome.synapse_detection import synapse_count

VOXEL = (40.0, 4.0, 4.0)


def parse(*argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    add_synapse_arguments(parser)
    return parser.parse_args(list(argv))


def test_help_states_the_detection_defaults():
    from napari_connectome.core.synapses import DETECTION_DEFAULTS

    parser = argparse.ArgumentParser()
    add_synapse_arguments(parser)
    helps = {a.dest: a.help for a in parser._actions}
    threshold, peak = DETECTION_DEFAULTS["threshold"], DETECTION_DEFAULTS["peak_threshold"]
    assert (
        f"default {threshold:g}; an object must also reach {peak:g}" in helps["synapse_threshold"]
    )
    assert f"default {peak:g}" in helps["synapse_peak_threshold"]
    assert f"default {DETECTION_DEFAULTS['min_size_nm3']:g}" in helps["synapse_min_size"]


def test_arguments():
    pytest.importorskip("safetensors")
    args = parse()
    assert args.synapses is False and args.synapse_model == "bundled"
    args = parse("--synapses", "--synapse-threshold", "0.3", "--synapse-min-size", "1e5")
    assert args.synapses and args.synapse_threshold == 0.3 and args.synapse_min_size == 1e5
    check_synapse_arguments(args)
    with pytest.raises(CommandError, match="between 0 and 1"):
        check_synapse_arguments(parse("--synapse-threshold", "1.5"))
    with pytest.raises(CommandError, match=">= 0"):
        check_synapse_arguments(parse("--synapse-min-size", "-1"))
    assert parse("--synapse-peak-threshold", "0.9").synapse_peak_threshold == 0.9
    with pytest.raises(CommandError, match=r"peak-threshold must be in \(0, 1\]"):
        check_synapse_arguments(parse("--synapse-peak-threshold", "0"))
    with pytest.raises(CommandError, match="no such synapse model file"):
        check_synapse_arguments(parse("--synapse-model", "/nonexistent.safetensors"))


@pytest.fixture(scope="module")
def phantom_store(tmp_path_factory, phantom_segmentation, write_store):
    from napari_connectome.synthetic import make_phantom

    ph = make_phantom((8, 128, 128), VOXEL, seed=3, synapse_density=10.0)
    result = phantom_segmentation((8, 128, 128), seed=3)
    store = write_store(result, tmp_path_factory.mktemp("s") / "seg.zarr", VOXEL)
    return ph, store


def constant_model(path, logit: float):
    """A synapse model file whose probability is ``sigmoid(logit)`` everywhere."""
    from napari_connectome.models.synapse_inference import SYNAPSE_OUTPUT
    from napari_connectome.models.unet import build_model, default_config
    from napari_connectome.models.weights import save_model

    config = default_config(out_channels=2, output=SYNAPSE_OUTPUT, base_channels=4, depth=2)
    model = build_model(config)
    for p in model.parameters():
        p.data.zero_()
    model.head.bias.data.fill_(logit)
    return save_model(model, config, path)


def test_a_model_that_finds_nothing_writes_an_empty_table(phantom_store, tmp_path):
    ph, store = phantom_store
    path = constant_model(tmp_path / "never.safetensors", -5.0)  # probability 0.007
    args = parse("--synapses", "--synapse-model", str(path))
    summary = run_synapse_detection(args, store, ph.raw, VOXEL, lambda f, m: None)
    assert "no synapses found" in summary and "empty synapse table" in summary
    assert has_synapses(store)
    assert len(read_synapse_store(store).detections) == 0
    # the export writes the header-only CSVs of an empty connectome
    from napari_connectome.cli import main

    edges, table = tmp_path / "edges.csv", tmp_path / "synapses.csv"
    args = ["export", str(store), "--connectome", str(edges), "--synapse-table", str(table)]
    assert main([*args, "--overwrite"]) == 0
    assert edges.read_text().splitlines() == ["pre,post,count"]
    assert table.read_text().splitlines()[0].startswith("id,z,y,x,pre,post,confidence")
    assert len(table.read_text().splitlines()) == 1


def test_peak_threshold_option_decides_what_is_kept(phantom_store, tmp_path):
    ph, store = phantom_store
    path = constant_model(tmp_path / "lukewarm.safetensors", 1.7)  # probability 0.85
    common = ("--synapses", "--synapse-model", str(path), "--synapse-threshold", "0.5")
    summary = run_synapse_detection(parse(*common), store, ph.raw, VOXEL, lambda f, m: None)
    assert "no synapses found" in summary  # never reaches the default peak, 0.9
    args = parse(*common, "--synapse-peak-threshold", "0.8")
    summary = run_synapse_detection(args, store, ph.raw, VOXEL, lambda f, m: None)
    assert summary.startswith("1 synapse,"), summary  # the whole volume is one object
    assert read_synapse_store(store).attrs["settings"]["peak_threshold"] == 0.8


def test_not_a_synapse_model(phantom_store):
    ph, store = phantom_store
    with pytest.raises(CommandError, match="not a synapse model"):
        run_synapse_detection(
            parse("--synapses", "--synapse-model", str(boundary_path())),
            store,
            ph.raw,
            VOXEL,
            lambda f, m: None,
        )


def test_bundled_model_on_a_phantom(phantom_store):
    from napari_connectome.models.synapse_inference import bundled_synapse_model_path

    if not bundled_synapse_model_path().is_file():
        pytest.skip("the synapse model is not installed")
    ph, store = phantom_store
    calls = []
    summary = run_synapse_detection(
        parse("--synapses"), store, ph.raw, VOXEL, lambda f, m: calls.append(f)
    )
    stored = read_synapse_store(store)
    n = len(stored.detections)
    assert calls and calls[-1] == 1.0
    assert stored.attrs["partner_rule"] == partner_defaults()
    assert stored.attrs["partner_rule"]["contact_weight"] == "synapse_squared"
    labels = np.asarray(stored.labels[...])
    assert labels.shape == ph.raw.shape and labels.max() == n
    if n:  # how many the under-trained model finds is not this test's business
        assert summary.startswith(f"{synapse_count(n)}, ") and stored.table is not None
        assert len(stored.table.rows()) >= n
    else:
        assert "no synapses found" in summary


def boundary_path():
    from napari_connectome.models.weights import bundled_model_path

    return bundled_model_path()
