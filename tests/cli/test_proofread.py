import numpy as np
import pytest
import zarr

from napari_connectome.cli import main
from napari_connectome.io.journal import journal_path, open_proofreading, read_journal

VOXEL = (40.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation((4, 96, 96), seed=1)


@pytest.fixture
def store(tmp_path, result, write_store):
    return write_store(result, tmp_path / "seg.zarr", VOXEL)


def run(store, *args):
    return main(["proofread", str(store), *map(str, args)])


def state_of(store):
    session = open_proofreading(store)
    session.close()
    return session.state


def kinds(store):
    return [r["kind"] for r in read_journal(journal_path(store)).records]


def seed(state, segment, index):
    fragment = int(state.segment_fragments(segment)[index])
    box = state.fragment_bbox(fragment)
    where = np.argwhere(state.fragments[box] == fragment)[0]
    return ",".join(str(int(c + s.start)) for c, s in zip(where, box, strict=True))


def test_merge_split_lock_undo_redo_history(store, capsys):
    state = state_of(store)
    segs = state.segments.tolist()
    a, b = segs[0], segs[1]
    assert run(store, "--merge", a, b) == 0
    assert "merged" in capsys.readouterr().out
    after = state_of(store)
    assert after.segment_at(tuple(map(int, seed(state, a, 0).split(",")))) == after.segment_at(
        tuple(map(int, seed(state, b, 0).split(",")))
    )
    s = next(x for x in after.segments.tolist() if len(after.segment_fragments(x)) >= 2)
    n = len(after.segments)
    assert (
        run(store, "--split", s, "--seeds", seed(after, s, 0), "--seeds", seed(after, s, -1)) == 0
    )
    assert f"split {s} into" in capsys.readouterr().out
    assert len(state_of(store).segments) == n + 1
    assert run(store, "--lock", s) == 0
    assert state_of(store).is_locked(s)
    assert run(store, "--undo") == 0
    assert "undo: lock" in capsys.readouterr().out
    assert run(store, "--undo", 2) == 0
    assert len(state_of(store).segments) == len(segs)
    assert run(store, "--redo", 3) == 0
    final = state_of(store)
    assert final.is_locked(s) and len(final.segments) == n + 1
    assert run(store, "--unlock", s, "--history") == 0
    out = capsys.readouterr().out
    assert kinds(store) == ["merge", "split", "lock", "undo", "undo", "undo"] + [
        "redo",
        "redo",
        "redo",
        "unlock",
    ]
    lines = out.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.split()[:2] == ["seq", "user"]) :]
    assert len(table) == 12 and "merge" in out and "split" in out  # header, 10 edits, summary
    assert any(line.split()[0] == "10" and "unlock" in line for line in table[2:])


def test_write_labels_only_in_changed_boxes(store, capsys):
    state = state_of(store)
    sizes = sorted(state.segments.tolist(), key=state.segment_size)
    a, b = sizes[0], sizes[1]  # the smallest: boxes smaller than the volume
    box = state.segment_bbox(a)
    segmentation = zarr.open_group(str(store), mode="r+")["segmentation"]
    free = np.ones(segmentation.shape, dtype=bool)
    free[box] = False
    outside = tuple(int(c) for c in np.argwhere(free)[0])
    segmentation[outside] = 12345  # a marker outside every changed box
    assert run(store, "--merge", a, b, "--write-labels") == 0
    assert "changed boxes" in capsys.readouterr().out
    written = np.asarray(segmentation[...])
    merged = state_of(store).segmentation()
    changed = written != merged
    assert changed.sum() == 1 and written[outside] == 12345
    assert run(store, "--write-labels") == 0
    assert "in 0 changed boxes" in capsys.readouterr().out
    assert run(store, "--undo", "--write-labels") == 0
    assert np.asarray(segmentation[...])[box].tolist() == state.segmentation()[box].tolist()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--merge", "999999", "1"], "no segment 999999"),
        (["--merge", "1"], "two or more"),
        (["--split", "1", "--seeds", "1,2"], "bad seed '1,2'"),
        (["--split", "1", "--seeds", "a,b,c", "--seeds", "0,0,0"], "bad seed 'a,b,c'"),
        (["--split", "1", "--seeds", "0,0,0"], "two or more --seeds"),
        (["--seeds", "0,0,0"], "belongs to --split"),
        (["--undo"], "0 edits to undo"),
        (["--redo", "2"], "0 edits to redo"),
    ],
)
def test_user_errors_exit_2(store, capsys, args, message):
    assert run(store, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-connectome proofread: error:") and message in err
    assert kinds(store) == []


def test_locked_segment_and_missing_or_foreign_stores(store, tmp_path, capsys):
    state = state_of(store)
    a, b = state.segments.tolist()[:2]
    assert run(store, "--lock", a) == 0
    assert run(store, "--merge", a, b) == 2
    assert "locked" in capsys.readouterr().err and kinds(store) == ["lock"]
    assert run(tmp_path / "missing.zarr", "--history") == 2
    assert "no such segmentation store" in capsys.readouterr().err
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=2)
    assert run(tmp_path / "other.zarr", "--history") == 2
    assert "not a napari-connectome segmentation store" in capsys.readouterr().err
