import os

import numpy as np
import pytest

from napari_connectome.cli import main
from napari_connectome.io import open_volume
from napari_connectome.io.journal import journal_path, open_proofreading

VOXEL = (40.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation((4, 64, 64), seed=1)


@pytest.fixture
def store(tmp_path, result, write_store):
    return write_store(result, tmp_path / "seg.zarr", VOXEL)


def corrected(store):
    session = open_proofreading(store)
    session.close()
    return session.state


@pytest.mark.parametrize("name", ["out.ome.zarr", "out.tif", "out.h5"])
def test_export_after_merge(store, tmp_path, capsys, name):
    segs = corrected(store).segments.tolist()
    a, b = segs[0], segs[1]
    assert main(["proofread", str(store), "--merge", str(a), str(b)]) == 0
    state = corrected(store)
    journal_size = journal_path(store).stat().st_size
    dest = tmp_path / name
    assert main(["export", str(store), "--labels", str(dest)]) == 0
    out = capsys.readouterr()
    assert str(dest) in out.out and "1 proofreading edit applied" in out.out
    assert "%" in out.err
    vol = open_volume(dest)
    data = np.asarray(vol.data)
    np.testing.assert_array_equal(data, state.labels_in(None))
    assert vol.voxel_size == pytest.approx(VOXEL)
    stored = np.asarray(open_volume(f"{store}:segmentation").data)
    # a and b are one segment now: the export has one id fewer than the stored labels
    assert len(np.unique(data)) == len(np.unique(stored)) - 1
    assert journal_path(store).stat().st_size == journal_size  # store untouched


def test_export_without_journal(store, tmp_path):
    dest = tmp_path / "out.h5"
    assert main(["export", str(store), "--labels", str(dest)]) == 0
    assert not journal_path(store).exists()
    data = np.asarray(open_volume(dest).data)
    assert len(np.unique(data)) == len(
        np.unique(np.asarray(open_volume(f"{store}:segmentation").data))
    )


def test_bad_input(store, tmp_path, capsys):
    dest = tmp_path / "out.tif"
    assert main(["export", str(tmp_path / "missing.zarr"), "--labels", str(dest)]) == 2
    assert "no such segmentation store" in capsys.readouterr().err
    plain = tmp_path / "plain.zarr"
    plain.mkdir()
    (plain / ".zgroup").write_text('{"zarr_format": 2}')
    assert main(["export", str(plain), "--labels", str(dest)]) == 2
    assert "not a napari-connectome segmentation store" in capsys.readouterr().err
    assert main(["export", str(store), "--labels", str(tmp_path / "out.png")]) == 2
    assert "unsupported suffix" in capsys.readouterr().err
    dest.write_bytes(b"old")
    assert main(["export", str(store), "--labels", str(dest)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert dest.read_bytes() == b"old"
    assert main(["export", str(store), "--labels", str(dest), "--overwrite"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["out.tif", "plain.zarr", "seg.zarr"]


# ---------------------------------------------------------------- connectome and synapses
def add_synapses(store, result):
    """Synapses from the largest segment onto its neighbours, written into the store."""
    from napari_connectome.core.synapses import assign_partners, detect_synapses
    from napari_connectome.io.synapse_store import write_synapse_store

    table = result.table_at(0.5)
    seg = table[result.fragments]
    ids, counts = np.unique(seg[seg > 0], return_counts=True)
    a = seg == ids[np.argmax(counts)]
    prob = np.zeros(seg.shape, np.float32)
    edge = a & ~np.roll(a, 1, axis=2)  # a's left border...
    cleft = edge | np.roll(edge, -1, axis=2) | np.roll(edge, -2, axis=2)  # ...and beyond it
    prob[1:3] = cleft[1:3] * 0.9
    det = detect_synapses(prob, VOXEL, min_size_nm3=0, nms_distance_nm=0, peak_threshold=None)
    syn = assign_partners(det, result.fragments, a.astype(np.float32), table=table)
    write_synapse_store(store, det, syn)
    return syn


def read_csv(path):
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_connectome_and_synapse_table_follow_proofreading(store, result, tmp_path, capsys):
    syn = add_synapses(store, result)
    edges, table = tmp_path / "edges.csv", tmp_path / "synapses.csv"
    args = ["export", str(store), "--connectome", str(edges), "--synapse-table", str(table)]
    assert main(args) == 0
    assert "0 edits applied" in capsys.readouterr().out
    rows = read_csv(table)
    assert list(rows[0]) == [*"id z y x pre post confidence".split(), "partner_confidence"]
    assert len(rows) == len(syn.rows()) and len({r["id"] for r in rows}) == len(syn)
    before = {(r["pre"], r["post"]): int(r["count"]) for r in read_csv(edges)}
    assert before and sum(before.values()) == len(syn.pairs)
    pre = int(syn.pre[0])
    posts = sorted({int(p) for p in syn.pairs[:, 1]})
    assert len(posts) >= 2, "the scene needs two postsynaptic partners"
    # merge two postsynaptic partners: their edges add up, without any model run
    assert main(["proofread", str(store), "--merge", str(posts[0]), str(posts[1])]) == 0
    assert main([*args, "--overwrite"]) == 0
    assert "1 edit applied" in capsys.readouterr().out
    after = {(r["pre"], r["post"]): int(r["count"]) for r in read_csv(edges)}
    assert sum(after.values()) <= sum(before.values())
    kept = str(
        corrected(store).table[
            result.fragments[
                tuple(np.argwhere(result.table_at(0.5)[result.fragments] == posts[0])[0])
            ]
        ]
    )
    # a synapse onto both merged partners now counts once
    onto = [
        {int(q) for q in syn.pairs[syn.pairs[:, 0] == i, 1]}
        for i in range(len(syn))
        if int(syn.pre[i]) == pre
    ]
    merged = sum(bool(s & {posts[0], posts[1]}) for s in onto)
    assert after[(str(pre), kept)] == merged


def test_connectome_needs_synapses(store, tmp_path, capsys):
    edges = tmp_path / "edges.csv"
    assert main(["export", str(store), "--connectome", str(edges)]) == 2
    err = capsys.readouterr().err
    assert "holds no synapses" in err and "--synapses" in err
    assert not edges.exists()
    assert main(["export", str(store)]) == 2
    assert "nothing to export" in capsys.readouterr().err
    assert main(["export", str(store), "--connectome", str(tmp_path / "e.txt")]) == 2
    assert "must end in .csv" in capsys.readouterr().err


# ------------------------------------------------------ streaming: bounded reads, same output
@pytest.fixture(scope="module")
def big_result(phantom_segmentation):
    return phantom_segmentation((8, 96, 96), seed=4)


def proofread_store(store):
    """Merges, a split inside one fragment, a graph split, a lock, undo and redo."""
    from napari_connectome.core.edits import LockEdit, MergeEdit, SplitEdit

    session = open_proofreading(store)
    state, history = session.state, session.history
    segs = state.segments.tolist()
    history.do(MergeEdit(segs[0], segs[1]))
    history.do(MergeEdit(segs[2], segs[-1]))
    sizes = state.graph.fragment_sizes

    def box_voxels(f):  # what a voxel split reads: the box plus one voxel around
        return np.prod([s.stop - s.start + 2 for s in state.fragment_bbox(f)])

    small = [f for f in range(1, state.n_fragments + 1) if box_voxels(f) <= 4 * 48 * 48]
    big = max(small, key=lambda f: int(sizes[f]))
    box = state.fragment_bbox(big)
    where = np.argwhere(state.fragments[box] == big) + [s.start for s in box]
    seg = int(state.table[big])
    history.do(SplitEdit(seg, [[where[0].tolist()], [where[-1].tolist()]]))  # voxels cut
    multi = [s for s in state.segments.tolist() if len(state.segment_fragments(s)) >= 3]
    frags = state.segment_fragments(multi[0])
    seeds = []
    for f in (frags[0], frags[-1]):
        fbox = state.fragment_bbox(int(f))
        seeds.append(
            [(np.argwhere(state.fragments[fbox] == f)[0] + [s.start for s in fbox]).tolist()]
        )
    history.do(SplitEdit(multi[0], seeds))
    history.do(LockEdit(int(state.segments[0]), True))
    history.undo()
    history.redo()
    session.close()
    return state


def test_export_streams_blocks_and_equals_the_in_memory_result(
    big_result, write_store, tmp_path, monkeypatch, capsys
):
    import zarr

    from napari_connectome.io import export

    store = write_store(big_result, tmp_path / "seg.zarr", VOXEL)
    want = proofread_store(store).labels_in(None)  # the whole volume in memory, as before
    assert want.shape == (8, 96, 96)
    block = (4, 48, 48)  # stored chunks are 1 x 96 x 96: one block of voxels too
    monkeypatch.setattr(export, "DEFAULT_CHUNKS_3D", block)
    reads = []
    getitem = zarr.Array.__getitem__

    def counted(self, key):
        out = getitem(self, key)
        if np.ndim(out) == 3:
            reads.append((self.path, int(np.size(out))))
        return out

    monkeypatch.setattr(zarr.Array, "__getitem__", counted)
    dest = tmp_path / "out.ome.zarr"
    assert main(["export", str(store), "--labels", str(dest)]) == 0
    assert "5 proofreading edits applied" in capsys.readouterr().out
    monkeypatch.undo()
    np.testing.assert_array_equal(np.asarray(open_volume(dest).data), want)
    read = [n for path, n in reads if path.split("/")[-1] in ("fragments", "boundaries")]
    # the old export read both volumes whole (8 x 96 x 96 voxels at once)
    assert read and max(read) <= np.prod(block), "a read covers more than one block"
    assert sum(read) < 3 * want.size  # fragments once, plus the split boxes
