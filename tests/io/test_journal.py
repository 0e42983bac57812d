"""The proofreading journal: durable, replayable, and robust to a crash mid-write."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from napari_connectome.core.history import History
from napari_connectome.io import journal as journal_module
from napari_connectome.io import read_segmentation_store
from napari_connectome.io.journal import (
    Journal,
    JournalError,
    journal_path,
    open_proofreading,
    read_journal,
    replay,
    state_from_store,
)

# One step (do, undo or redo) per call, chosen from the state by ``rng``: the
# child process and the test run the very same code.
STEP_SOURCE = """
import numpy as np
from napari_connectome.core.edits import LockEdit, MergeEdit, SplitEdit


def _voxels(state, fragment, rng, count):
    box = state.fragment_bbox(fragment)
    where = np.argwhere(state.fragments[box] == fragment)
    if len(where) < count:
        return None
    pick = rng.choice(len(where), size=count, replace=False)
    return [[int(c) for c in where[i] + [s.start for s in box]] for i in pick]


def next_step(history, rng):
    state = history.state
    r = rng.random()
    if r < 0.1 and history.can_undo:
        return history.undo()
    if r < 0.15 and history.can_redo:
        return history.redo()
    free = [s for s in state.segments.tolist() if not state.is_locked(s)]
    if r < 0.3 or len(free) < 2:
        if state.locked and (rng.random() < 0.5 or not free):
            return history.do(LockEdit(sorted(state.locked)[0], False))
        return history.do(LockEdit(int(rng.choice(free)), True))
    if r < 0.6:
        a, b = rng.choice(free, size=2, replace=False)
        return history.do(MergeEdit(int(a), int(b)))
    s = int(rng.choice(free))
    frags = state.segment_fragments(s)
    if len(frags) >= 2 and r < 0.8:
        f, g = rng.choice(frags, size=2, replace=False)
        seeds = [_voxels(state, int(f), rng, 1), _voxels(state, int(g), rng, 1)]
    else:
        pair = _voxels(state, int(rng.choice(frags)), rng, 2)
        if pair is None:
            return history.do(LockEdit(s, True))
        seeds = [[pair[0]], [pair[1]]]
    return history.do(SplitEdit(s, seeds))
"""

CHILD = (
    STEP_SOURCE
    + """
import sys
import time
from napari_connectome.io.journal import open_proofreading

session = open_proofreading(sys.argv[1], user="crash-test")
rng = np.random.default_rng(int(sys.argv[2]))
for i in range(1, 3000):
    next_step(session.history, rng)  # returns once the journal line is on disk
    print(f"ack {i}", flush=True)
time.sleep(600)
"""
)


def _steps():
    namespace = {}
    exec(STEP_SOURCE, namespace)
    return namespace["next_step"]


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation((6, 96, 96), seed=4, noise=0.05)


@pytest.fixture
def store(tmp_path, result, write_store):
    return write_store(result, tmp_path / "seg.zarr", (40, 4, 4))


def assert_same_state(a, b):
    assert a.n_fragments == b.n_fragments
    assert np.array_equal(a.table, b.table)
    assert np.array_equal(a.fragments, b.fragments)
    assert a.locked == b.locked


def run_steps(store, count, seed):
    state = state_from_store(store)
    history = History(state)
    step = _steps()
    rng = np.random.default_rng(seed)
    for _ in range(count):
        step(history, rng)
    return state


def test_session_journals_every_step_and_replays(store):
    session = open_proofreading(store, user="alice")
    step, rng = _steps(), np.random.default_rng(0)
    for _ in range(25):
        step(session.history, rng)
    session.close()
    contents = read_journal(journal_path(store))
    assert len(contents.records) == 25 and not contents.torn
    assert contents.header["user"] == "alice"
    kinds = {r["kind"] for r in contents.records}
    assert {"merge", "split", "lock"} <= kinds
    assert all(r["user"] == "alice" and r["time"] for r in contents.records)
    assert [r["seq"] for r in contents.records] == list(range(1, 26))
    again = open_proofreading(store)  # replays, then appends after the last line
    assert_same_state(again.state, run_steps(store, 25, 0))
    assert len(again.history) == len(session.history)
    again.history.undo()
    again.close()
    assert read_journal(journal_path(store)).records[-1]["kind"] == "undo"
    read_segmentation_store(store)  # the journal folder does not disturb the store


def test_append_fsyncs_before_returning(store, monkeypatch):
    session = open_proofreading(store)
    calls = []
    real = os.fsync
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: calls.append(fd) or real(fd))
    a, b = (int(s) for s in session.state.segments[:2])
    session.history.merge(a, b)
    assert len(calls) == 1
    session.close()


def test_torn_last_line_is_skipped_then_cut_off(store):
    session = open_proofreading(store)
    a, b, c = (int(s) for s in session.state.segments[:3])
    session.history.merge(a, b)
    session.history.lock(c)
    session.close()
    path = journal_path(store)
    with open(path, "ab") as f:
        f.write(b'{"kind":"merge","segments":[1,')  # a crash mid-write
    with pytest.warns(UserWarning, match="line 4 is incomplete"):
        contents = read_journal(path)
    assert len(contents.records) == 2 and contents.torn
    with pytest.warns(UserWarning):
        again = open_proofreading(store)
    assert again.state.is_locked(c) and len(again.history) == 2
    again.history.unlock(c)
    again.close()
    contents = read_journal(path)  # the torn bytes are gone; the new line follows
    assert [r["kind"] for r in contents.records] == ["merge", "lock", "unlock"]


def test_corrupted_last_line_warns_middle_line_raises(store):
    session = open_proofreading(store)
    segs = [int(s) for s in session.state.segments[:4]]
    session.history.merge(segs[0], segs[1])
    session.history.merge(segs[2], segs[3])
    session.close()
    path = journal_path(store)
    lines = path.read_bytes().split(b"\n")
    last = lines[2].replace(b'"merge"', b'"mergX"')
    path.write_bytes(b"\n".join([*lines[:2], last, b""]))
    with pytest.warns(UserWarning, match="last line 3 is corrupted"):
        assert len(read_journal(path).records) == 1
    middle = lines[1].replace(b"segments", b"segmentz")
    path.write_bytes(b"\n".join([lines[0], middle, *lines[2:]]))
    with pytest.raises(JournalError, match="line 2 is corrupted"):
        read_journal(path)
    with pytest.raises(JournalError, match="line 2"):
        open_proofreading(store)


def test_replay_refuses_another_state_or_a_diverging_result(store):
    session = open_proofreading(store)
    a, b = (int(s) for s in session.state.segments[:2])
    session.history.merge(a, b)
    session.close()
    path = journal_path(store)
    with pytest.raises(JournalError, match="another segmentation state"):
        replay(state_from_store(store, threshold=0.0), path)
    lines = path.read_bytes().split(b"\n")
    record = json.loads(lines[1])
    del record["crc"]
    record["result"] = {"segment": 10**6}
    lines[1] = journal_module._encode(record).rstrip(b"\n")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalError, match="line 2 .* replayed to"):
        replay(state_from_store(store), path)


def test_new_journal_needs_the_state(tmp_path):
    with pytest.raises(ValueError, match="starting state"):
        Journal.open(tmp_path / "j.jsonl")


def test_sigkill_mid_run_loses_no_acknowledged_edit(store, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    seed = 7
    child = subprocess.Popen(
        [sys.executable, str(script), str(store), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked = 0
    deadline = time.monotonic() + 120
    try:
        for line in child.stdout:
            acked = int(line.split()[1])
            if acked >= 40 or time.monotonic() > deadline:
                break
        child.send_signal(signal.SIGKILL)
        rest, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert acked >= 40, f"the child did not get going: {err[-2000:]}"
    acked = max([acked] + [int(x.split()[1]) for x in rest.splitlines() if x.startswith("ack")])
    read_segmentation_store(store)  # the store is still readable
    with _maybe_warns():
        contents = read_journal(journal_path(store))
    written = len(contents.records)
    assert acked <= written <= acked + 1  # at most the unacknowledged one in flight
    state = state_from_store(store)
    with _maybe_warns():
        replay(state, journal_path(store))
    assert_same_state(state, run_steps(store, written, seed))


class _maybe_warns:
    """Accept (and ignore) the warning about a torn last line."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", UserWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_replay_uses_the_callers_history_even_when_empty(store):
    """An empty History has length 0; replay must still use it, not a new one."""
    from napari_connectome.core.history import History

    session = open_proofreading(store)
    a, b = (int(s) for s in session.state.segments[:2])
    session.history.merge(a, b)
    session.close()
    state = state_from_store(store)
    history = History(state)
    assert len(history) == 0
    replay(state, journal_path(store), history=history)
    assert len(history) == 1


def test_lazy_session_journals_the_same_edits_reading_boxes_only(store):
    from napari_connectome.io.lazy_state import PatchedVolume

    session = open_proofreading(store, user="bob", lazy=True)
    state = session.state
    assert isinstance(state.fragments, PatchedVolume) and not state.fragments.reads
    step, rng = _steps(), np.random.default_rng(7)
    for _ in range(20):
        step(session.history, rng)  # journaled before it returns, as in memory
    session.close()
    assert max(state.fragments.reads) < state.fragments.size  # boxes, never the whole volume
    contents = read_journal(journal_path(store))
    assert len(contents.records) == 20 and contents.header["user"] == "bob"
    assert {"merge", "split"} <= {r["kind"] for r in contents.records}
    expected = run_steps(store, 20, 7)
    full = tuple(slice(0, n) for n in expected.fragments.shape)
    np.testing.assert_array_equal(state.table, expected.table)
    np.testing.assert_array_equal(state.labels_in(full), expected.segmentation())
    assert state.locked == expected.locked
    # reopened lazily: the journal replays to the same labels, and new edits append
    again = open_proofreading(store, lazy=True)
    np.testing.assert_array_equal(again.state.labels_in(full), expected.segmentation())
    assert len(again.history) == len(session.history)
    again.history.undo()
    again.close()
    assert read_journal(journal_path(store)).records[-1]["kind"] == "undo"
