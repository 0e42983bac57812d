"""``napari-connectome proofread``: edit a segmentation store from the shell, journaled."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import CommandError


def _seed(text: str, ndim: int) -> tuple[int, ...]:
    parts = text.split(",")
    try:
        seed = tuple(int(p) for p in parts)
    except ValueError:
        seed = ()
    if len(seed) != ndim:
        axes = "z,y,x" if ndim == 3 else "y,x"
        raise CommandError(f"bad seed {text!r}: expected {ndim} integers {axes}, e.g. 3,40,52")
    return seed


def _open(store: Path):
    """Open the store like ``open_proofreading``, recording each journal step's box.

    Returns the session and the list of boxes, one per journal line after the
    header (replayed ones first, then the ones this run adds).
    """
    from ..core.history import History
    from ..io import read_segmentation_store
    from ..io.journal import Journal, ProofreadingSession, journal_path, replay, state_from_store

    stored = read_segmentation_store(store)
    state = state_from_store(stored)
    history = History(state)
    boxes: list = []
    history.listeners.append(lambda action, entry: boxes.append(entry.bbox))
    path = journal_path(stored.path)
    if path.exists() and path.stat().st_size > 0:
        replay(state, path, history=history)
    journal = Journal.open(path, state, threshold=stored.threshold, user=history.user)
    journal.attach(history)
    return ProofreadingSession(state, history, journal, stored.path), boxes


def _edit(args, history) -> str:
    """Do the one edit the flags ask for; return what was done."""
    if args.seeds and args.split is None:
        raise CommandError("--seeds belongs to --split ID")
    if args.merge:
        if len(args.merge) < 2:
            raise CommandError("--merge needs two or more segment ids")
        history.merge(*args.merge)
        kept = history.entries[-1].edit.result["segment"]
        return f"merged {' + '.join(map(str, args.merge))} into {kept}"
    if args.split is not None:
        groups = [[_seed(s, history.state.ndim) for s in group] for group in args.seeds or []]
        if len(groups) < 2:
            raise CommandError("--split needs two or more --seeds groups (one per part)")
        history.split(args.split, groups)
        ids = history.entries[-1].edit.result["segments"]
        return f"split {args.split} into {', '.join(map(str, ids))}"
    if args.lock is not None:
        history.lock(args.lock)
        return f"locked {args.lock}"
    if args.unlock is not None:
        history.unlock(args.unlock)
        return f"unlocked {args.unlock}"
    for name, stack in (("undo", history.entries), ("redo", history.redo_entries)):
        count = getattr(args, name)
        if count is None:
            continue
        if count < 1 or count > len(stack):
            raise CommandError(f"--{name} {count}: there are {len(stack)} edits to {name}")
        what = []
        for i in range(count):
            what.append(stack[-1 - i].description)
            getattr(history, name)()
        return f"{name}: {'; '.join(what)}"
    return ""


def _write_labels(session, boxes) -> str:
    """Rewrite the store's segmentation in the boxes changed since the last write."""
    import zarr

    from ..io.journal import journal_path, read_journal

    root = zarr.open_group(str(session.store), mode="r+")
    array = root["segmentation"]
    header = read_journal(journal_path(session.store)).header
    mark = dict(array.attrs.get("proofreading", {}))
    done = int(mark.get("seq", 0)) if mark.get("journal") == header["time"] else 0
    pending = boxes[done:]
    top = int(session.state.next_segment_id) - 1
    if top > (2**32 - 1 if array.dtype.itemsize == 4 else 2**64 - 1):
        raise CommandError(f"segment id {top} does not fit the store's {array.dtype} segmentation")
    if mark and mark.get("journal") != header["time"]:
        pending = [tuple(slice(0, n) for n in array.shape)]  # another journal: write it all
    written = 0
    for box in pending:
        if any(s.stop <= s.start for s in box):
            continue
        array[box] = session.state.labels_in(box).astype(array.dtype, copy=False)
        written += 1
    array.attrs["proofreading"] = {"journal": header["time"], "seq": len(boxes)}
    return f"wrote the segmentation in {written} changed boxes (journal line {len(boxes)})"


def _history_table(store: Path) -> list[str]:
    from ..io.journal import journal_path, read_journal

    path = journal_path(store)
    if not path.exists():
        return ["no journal yet: no edits"]
    lines = [f"{'seq':>5}  {'user':<12} {'time (UTC)':<23}  edit"]
    for r in read_journal(path).records:
        kind = r["kind"]
        if kind == "merge":
            edit = f"merge {' + '.join(map(str, r['segments']))} -> {r['result']['segment']}"
        elif kind == "split":
            ids = ", ".join(map(str, r["result"]["segments"]))
            edit = f"split {r['segment']} ({len(r['seeds'])} parts) -> {ids}"
        elif kind in ("undo", "redo"):
            edit = f"{kind} ({r['edit']})"
        else:
            edit = f"{kind} {r.get('segment', '')}"
        time = str(r.get("time", ""))[:23].replace("T", " ")
        lines.append(f"{r['seq']:>5}  {str(r.get('user', '')):<12} {time:<23}  {edit}")
    return lines


def cmd_proofread(args: argparse.Namespace) -> int:
    """Apply one proofreading edit to a segmentation store (journaled), and report."""
    from ..core.edits import LockedSegmentError
    from ..io import VolumeError
    from ..io.journal import JournalError

    store = Path(args.store).expanduser()
    try:
        session, boxes = _open(store)
    except (VolumeError, JournalError, OSError) as error:
        raise CommandError(str(error)) from error
    try:
        try:
            done = _edit(args, session.history)
        except (ValueError, LockedSegmentError) as error:
            raise CommandError(str(error)) from error
        if done:
            print(f"{done} (journaled in {session.journal.path})")
        if args.write_labels:
            print(_write_labels(session, boxes))
    finally:
        session.close()
    if args.history:
        print("\n".join(_history_table(store)))
    state = session.state
    print(
        f"{len(state.segments)} segments, {len(state.locked)} locked, {len(session.history)} edits"
    )
    return 0


def add_parser(sub) -> None:
    """Add the ``proofread`` subcommand to the subparsers ``sub``."""
    p = sub.add_parser(
        "proofread",
        help="merge, split, lock segments of a segmentation store; undo, redo, history",
        description=(
            "Edit the segmentation state in OUTPUT.zarr (from `napari-connectome segment` or "
            "the Proofread dock). Every edit is appended to OUTPUT.zarr/proofreading/"
            "journal.jsonl, replayed the next time the store is opened; the store's "
            "segmentation array changes only with --write-labels."
        ),
    )
    p.add_argument("store", help="the segmentation store (OUTPUT.zarr)")
    edit = p.add_mutually_exclusive_group()
    edit.add_argument("--merge", nargs="+", type=int, metavar="ID", help="merge segments")
    edit.add_argument("--split", type=int, metavar="ID", help="split a segment (with --seeds)")
    edit.add_argument("--lock", type=int, metavar="ID", help="lock a segment against edits")
    edit.add_argument("--unlock", type=int, metavar="ID", help="unlock a segment")
    edit.add_argument("--undo", nargs="?", const=1, type=int, metavar="N", help="undo N edits")
    edit.add_argument("--redo", nargs="?", const=1, type=int, metavar="N", help="redo N edits")
    p.add_argument(
        "--seeds",
        nargs="+",
        action="append",
        metavar="Z,Y,X",
        help="voxels of one part of a --split (repeat: one --seeds per part, at least two)",
    )
    p.add_argument("--history", action="store_true", help="print the journal as a table")
    p.add_argument(
        "--write-labels",
        action="store_true",
        help="write the current labels into the store's segmentation array (changed boxes only)",
    )
    p.set_defaults(func=cmd_proofread)
