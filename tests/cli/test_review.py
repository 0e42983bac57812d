import argparse
import json
import sys

import numpy as np
import pytest
import zarr

from napari_connectome.cli import _review
from napari_connectome.cli._common import CommandError
from napari_connectome.synthetic import make_phantom

SHAPE = (6, 128, 128)
SEED = 3
VOXEL = (40.0, 4.0, 4.0)


def main(argv):
    """``napari-connectome review ...``; built here while the subcommand is not registered."""
    from napari_connectome.cli import build_parser

    parser = build_parser()
    try:
        parser.parse_known_args(["review", "x"])
    except SystemExit:  # not registered yet: a parser with the review subcommand only
        parser = argparse.ArgumentParser(prog="napari-connectome")
        _review.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CommandError as error:
        print(f"napari-connectome {args.command}: error: {error}", file=sys.stderr)
        return 2


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation(SHAPE, seed=SEED, noise=0.4)


@pytest.fixture
def store(tmp_path, result, write_store):
    return write_store(result, tmp_path / "seg.zarr", VOXEL)


@pytest.fixture(scope="module")
def truth_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("truth") / "truth.npz"
    np.savez(path, neurons=make_phantom(SHAPE, VOXEL, seed=SEED).neurons)
    return path


def test_simulate_json_curve(store, truth_file, capsys):
    argv = ["review", str(store), "--simulate", str(truth_file), "--key", "neurons"]
    assert main([*argv, "--json", "--every", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"curve", "queue_length", "final"}
    curve = out["curve"]
    assert curve[0]["decisions"] == 0
    assert set(curve[0]) == {"decisions", "voi_split", "voi_merge", "voi", "arand"}
    assert curve[-1]["decisions"] == out["final"]["decisions"]
    assert curve[-1]["voi"] < curve[0]["voi"]
    assert out["final"]["floor"]["voi"] <= curve[-1]["voi"]
    assert out["queue_length"] > 0


def test_simulate_budget_and_rankings_as_a_table(store, truth_file, capsys):
    spec = f"{truth_file}:neurons"
    assert (
        main(
            [
                "review",
                str(store),
                "--simulate",
                spec,
                "--budget",
                "4",
                "--every",
                "2",
                "--ranking",
                "random",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "decisions" in text and "budget reached" in text
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows[:3]] == [0, 2, 4]


def test_without_simulate_lists_the_queue(store, capsys):
    assert main(["review", str(store), "--budget", "5", "--ranking", "static"]) == 0
    text = capsys.readouterr().out
    assert "candidates" in text
    assert sum(line.startswith(("merge", "split")) for line in text.splitlines()) == 5
    assert main(["review", str(store), "--budget", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["top"]) == 3 and out["queue_length"] >= 3


def test_truth_of_the_wrong_shape_is_refused(store, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, neurons=np.zeros((2, 8, 8), np.uint32))
    assert main(["review", str(store), "--simulate", f"{bad}:neurons"]) == 2
    err = capsys.readouterr().err
    assert "shape (2, 8, 8)" in err and "same volume" in err


def test_store_without_region_graph_says_to_segment_first(tmp_path, store, capsys):
    import shutil

    broken = tmp_path / "broken.zarr"
    shutil.copytree(store, broken)
    shutil.rmtree(broken / "region_graph")
    assert main(["review", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "no region graph" in err and "napari-connectome segment" in err
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w")
    assert main(["review", str(plain)]) == 2
    assert "napari-connectome segment" in capsys.readouterr().err
    assert main(["review", str(tmp_path / "missing.zarr")]) == 2
    assert "no such segmentation store" in capsys.readouterr().err
