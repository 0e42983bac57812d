"""Crash-safe journal of proofreading edits, beside the segmentation store.

Every acknowledged edit is one line of an append-only JSON-lines file, by
default ``OUTPUT.zarr/proofreading/journal.jsonl`` inside the segmentation
store it edits (``proofreading`` is an empty zarr group to zarr readers;
rewriting the store with ``overwrite`` drops the journal together with the
segmentation it was for).
:meth:`Journal.append` writes the line, flushes and fsyncs it before
it returns, so an edit a dock reports as done survives a crash or a kill.

Line format (one JSON object per line, keys sorted)::

    {"seq": 0, "kind": "header", "format": "napari-connectome-journal", "version": 1,
     "n_fragments": N, "table_crc32": "...", "threshold": t, "user": ..., "time": ...,
     "crc": "1a2b3c4d"}
    {"seq": 1, "kind": "merge", "segments": [12, 40], "result": {"segment": 40}, ...}
    {"seq": 2, "kind": "split", "segment": 7, "seeds": [[[3, 40, 52]], [[3, 90, 17]]],
     "result": {"segments": [7, 105]}, ...}
    {"seq": 3, "kind": "lock", "segment": 7, ...}       (and "unlock")
    {"seq": 4, "kind": "undo", "edit": "lock 7", ...}   (and "redo")

Each line has ``seq`` (consecutive from 0), ``user`` (the login name),
``time`` (ISO 8601, UTC) and ``crc``: the CRC-32 of the line's canonical JSON
without the ``crc`` key.  The header ties the journal to the starting table
(its CRC-32 and the number of fragments); replaying on any other table is
refused.  Edits are replayed from their parameters (deterministic: the same
ids come out, which the recorded ``result`` checks).

A line counts once it is on disk with its newline.  :func:`read_journal` skips
a torn or corrupted *last* line (a crash mid-write) with a warning; a bad
line before the last raises :class:`JournalError` naming it.

Examples
--------
>>> session = open_proofreading("out.zarr")  # doctest: +SKIP
>>> session.history.merge(12, 40)  # journaled before it returns  # doctest: +SKIP
>>> session.close()  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.edits import edit_from_dict
from ..core.history import History, HistoryEntry, default_user
from ..core.proofreading import ProofreadingState
from ._common import VolumeError

__all__ = [
    "JOURNAL_FORMAT",
    "JOURNAL_VERSION",
    "Journal",
    "JournalContents",
    "JournalError",
    "ProofreadingSession",
    "journal_path",
    "open_proofreading",
    "read_journal",
    "replay",
    "state_from_store",
    "table_crc32",
]

#: Value of the header's ``format``.
JOURNAL_FORMAT = "napari-connectome-journal"
#: Version of the line format described in this module.
JOURNAL_VERSION = 1


class JournalError(ValueError):
    """The journal is corrupted, or does not belong to the state it is replayed on."""


def journal_path(store) -> Path:
    """Return the journal path of a segmentation store: ``STORE/proofreading/journal.jsonl``.

    Parameters
    ----------
    store : str or path-like
        The segmentation store (``OUTPUT.zarr``).

    Returns
    -------
    pathlib.Path
        The journal file (it may not exist yet).
    """
    return Path(store).expanduser() / "proofreading" / "journal.jsonl"


def table_crc32(table) -> str:
    """Return the CRC-32 of a fragment-to-segment table (as ``uint64`` values), in hex."""
    data = np.ascontiguousarray(np.asarray(table, dtype=np.uint64)).tobytes()
    return f"{zlib.crc32(data):08x}"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def _encode(record: dict) -> bytes:
    body = json.dumps(record, sort_keys=True, separators=(",", ":"))
    crc = zlib.crc32(body.encode())
    return (body[:-1] + f',"crc":"{crc:08x}"}}\n').encode()


def _decode(line: bytes) -> dict:
    """Parse and check one line (without its newline); raise ValueError when bad."""
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("crc"), str):
        raise ValueError("no checksum")
    crc = record.pop("crc")
    body = json.dumps(record, sort_keys=True, separators=(",", ":"))
    if f"{zlib.crc32(body.encode()):08x}" != crc:
        raise ValueError("checksum mismatch")
    return record


@dataclass
class JournalContents:
    """What :func:`read_journal` found.

    Attributes
    ----------
    header : dict
        The header line.
    records : list of dict
        The edit lines after it, in order, each with ``line`` (its 1-based line
        number) added.
    good_bytes : int
        Length of the valid prefix of the file.
    torn : bool
        Whether a torn or corrupted last line was skipped.
    """

    header: dict
    records: list
    good_bytes: int
    torn: bool


def read_journal(path) -> JournalContents:
    """Read and check a journal.

    Parameters
    ----------
    path : str or path-like
        The journal file.

    Returns
    -------
    JournalContents
        Header, edit records and the length of the valid prefix.

    Raises
    ------
    JournalError
        If a line other than the last is corrupted or out of sequence, or the
        header is missing or of another format.

    Warns
    -----
    UserWarning
        When a torn or corrupted last line is skipped.
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")  # the last item is b"" when the file ends with a newline
    records, offset, torn = [], 0, False
    for number, line in enumerate(lines, start=1):
        last = number == len(lines) - 1 and not lines[-1]
        if number == len(lines):
            if line:  # no newline: the write was cut
                torn = True
                warnings.warn(
                    f"{path}: line {number} is incomplete (a crash mid-write?); skipped",
                    stacklevel=2,
                )
            break
        try:
            record = _decode(line)
            if record.get("seq") != len(records):
                raise ValueError(f"sequence number {record.get('seq')}, expected {len(records)}")
        except ValueError as exc:
            if last:
                torn = True
                warnings.warn(
                    f"{path}: last line {number} is corrupted ({exc}); skipped", stacklevel=2
                )
                break
            raise JournalError(
                f"{path}: line {number} is corrupted ({exc}); the journal cannot be replayed "
                "past it (edits after it are lost unless the line is repaired)"
            ) from exc
        record["line"] = number
        records.append(record)
        offset += len(line) + 1
    if not records:
        if data and not torn:
            raise JournalError(f"{path}: no header line")
        raise JournalError(f"{path}: the journal is empty (its header was never written)")
    header = records.pop(0)
    if header.get("kind") != "header" or header.get("format") != JOURNAL_FORMAT:
        raise JournalError(f"{path} is not a napari-connectome journal")
    if int(header.get("version", 0)) > JOURNAL_VERSION:
        raise JournalError(
            f"{path} has journal version {header['version']}; this napari-connectome "
            f"reads up to {JOURNAL_VERSION}: please upgrade"
        )
    return JournalContents(header, records, offset, torn)


class Journal:
    """An open journal that appends one durable line per acknowledged edit.

    Use :meth:`open`; attach it to a :class:`History` with :meth:`attach` so
    every do, undo and redo is journaled before the history call returns.

    Parameters
    ----------
    path : pathlib.Path
        The journal file (exists, valid).
    next_seq : int
        Sequence number of the next line.
    user : str
        Name written with each line.
    """

    def __init__(self, path: Path, next_seq: int, user: str):
        self.path = Path(path)
        self.user = user
        self._seq = int(next_seq)
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for appends

    @classmethod
    def open(
        cls, path, state: ProofreadingState | None = None, *, threshold=None, user=None
    ) -> Journal:
        """Open a journal for appending, creating it (with its header) if needed.

        An existing journal is checked; a torn last line is cut off (with a
        warning) so new lines follow the last good one.

        Parameters
        ----------
        path : str or path-like
            The journal file; its folder is created.
        state : ProofreadingState, optional
            The starting state, required to create a journal (its table goes
            into the header).
        threshold : float, optional
            Threshold of the starting table, recorded in the header.
        user : str, optional
            Name written with each line; the login name by default.

        Returns
        -------
        Journal
            The open journal.
        """
        path = Path(path).expanduser()
        user = user or default_user()
        if path.exists() and path.stat().st_size > 0:
            contents = read_journal(path)
            if contents.torn:
                with open(path, "r+b") as f:
                    f.truncate(contents.good_bytes)
                    f.flush()
                    os.fsync(f.fileno())
            return cls(path, len(contents.records) + 1, user)
        if state is None:
            raise ValueError(f"{path} does not exist; pass the starting state to create it")
        path.parent.mkdir(parents=True, exist_ok=True)
        _mark_zarr_group(path.parent)
        header = {
            "seq": 0,
            "kind": "header",
            "format": JOURNAL_FORMAT,
            "version": JOURNAL_VERSION,
            "n_fragments": int(state.n_fragments),
            "table_crc32": table_crc32(state.table),
            "threshold": None if threshold is None else float(threshold),
            "user": user,
            "time": _now(),
        }
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(_encode(header))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # the journal appears complete with its header, or not at all
        _fsync_dir(path.parent)
        return cls(path, 1, user)

    @property
    def next_seq(self) -> int:
        """int: Sequence number of the next line."""
        return self._seq

    def append(self, kind: str, params: dict | None = None, *, user: str | None = None) -> int:
        """Append one line; returns only once it is on disk (write, flush, fsync).

        Parameters
        ----------
        kind : str
            ``"merge"``, ``"split"``, ``"lock"``, ``"unlock"``, ``"undo"`` or ``"redo"``.
        params : dict, optional
            What replays it (JSON-serialisable).
        user : str, optional
            Who did it; the journal's user by default.

        Returns
        -------
        int
            The line's sequence number.
        """
        if self._file.closed:
            raise ValueError(f"{self.path}: the journal is closed")
        record = dict(params or {})
        record.update(seq=self._seq, kind=kind, user=user or self.user, time=_now())
        self._file.write(_encode(record))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._seq += 1
        return record["seq"]

    def record(self, action: str, entry: HistoryEntry) -> None:
        """Journal one history step (a :attr:`History.listeners` callback).

        Parameters
        ----------
        action : {"do", "undo", "redo"}
            The step.
        entry : HistoryEntry
            The entry done, undone or redone.
        """
        if action == "do":
            params = entry.edit.to_dict()
            kind = params.pop("kind")
            params["result"] = entry.edit.result
            self.append(kind, params, user=entry.user)
        else:
            self.append(action, {"edit": entry.description})

    def attach(self, history: History) -> None:
        """Journal every later step of ``history``."""
        history.listeners.append(self.record)

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _mark_zarr_group(folder: Path) -> None:
    """Make the journal's folder an (empty) zarr group when it sits in a zarr v2 store.

    Zarr then lists it like any other member instead of warning about an
    unknown object.
    """
    marker = folder / ".zgroup"
    if (folder.parent / ".zgroup").exists() and not marker.exists():
        marker.write_text(json.dumps({"zarr_format": 2}))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on some platforms (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replay(state: ProofreadingState, path, *, history: History | None = None, user=None):
    """Re-apply a journal to a fresh state (the one it was started on).

    Parameters
    ----------
    state : ProofreadingState
        The starting state (as built from the store at the journal's threshold).
    path : str or path-like
        The journal.
    history : History, optional
        History to replay into (no journal attached); a new one by default.
    user : str, optional
        User of a new history.

    Returns
    -------
    History
        The history after the replay (undo and redo work as before the crash).

    Raises
    ------
    JournalError
        If the journal is corrupted before its last line, was written for
        another starting table, or an edit does not replay to the same result.
    """
    contents = read_journal(path)
    head = contents.header
    if int(head.get("n_fragments", -1)) != state.n_fragments or head.get(
        "table_crc32"
    ) != table_crc32(state.table):
        raise JournalError(
            f"{path} was written for another segmentation state (threshold "
            f"{head.get('threshold')}, {head.get('n_fragments')} fragments); open the store at "
            "the journal's threshold, or move the journal aside to start afresh"
        )
    history = History(state, user=user) if history is None else history
    for record in contents.records:
        kind, line = record["kind"], record["line"]
        try:
            if kind in ("undo", "redo"):
                if getattr(history, kind)() is None:
                    raise ValueError(f"nothing to {kind}")
                continue
            edit = edit_from_dict(record)
            history.do(edit)
        except Exception as exc:
            raise JournalError(f"{path}: line {line} ({kind}) does not replay: {exc}") from exc
        entry = history.entries[-1]
        entry.user, entry.time = record.get("user", entry.user), record.get("time", entry.time)
        expected = record.get("result")
        if expected is not None and _plain(edit.result) != _plain(expected):
            raise JournalError(
                f"{path}: line {line} ({edit.describe()}) replayed to {edit.result}, the "
                f"journal says {expected}: the starting state differs"
            )
    return history


def _plain(value):
    return json.loads(json.dumps(value))


def state_from_store(stored, threshold: float | None = None) -> ProofreadingState:
    """Build a fresh proofreading state from a segmentation store (no journal applied).

    Parameters
    ----------
    stored : StoredSegmentation or str or path-like
        An open store, or its path.
    threshold : float, optional
        Threshold of the starting table; the store's by default.

    Returns
    -------
    ProofreadingState
        Fragments read into memory, the stored region graph, the table at
        ``threshold``, the stored (8-bit) boundaries and voxel size.
    """
    from .segmentation_store import StoredSegmentation, read_segmentation_store

    if not isinstance(stored, StoredSegmentation):
        stored = read_segmentation_store(stored)
    threshold = stored.threshold if threshold is None else float(threshold)
    try:
        fragments = np.asarray(stored.fragments[...], dtype=np.uint64)
    except Exception as exc:  # pragma: no cover - damaged chunks
        raise VolumeError(f"{stored.path}: cannot read the fragments: {exc}") from exc
    return ProofreadingState(
        fragments,
        stored.graph,
        stored.table_at(threshold),
        boundaries=stored.load_boundaries(),
        voxel_size=stored.voxel_size,
    )


@dataclass
class ProofreadingSession:
    """A segmentation store opened for proofreading: state, history and journal.

    Attributes
    ----------
    state : ProofreadingState
        The editable state (fragments in memory, or read from the store box by
        box when opened with ``lazy=True``).
    history : History
        Undo and redo; every step is journaled before it returns.
    journal : Journal
        The open journal.
    store : pathlib.Path
        The segmentation store.
    """

    state: ProofreadingState
    history: History
    journal: Journal
    store: Path

    def close(self) -> None:
        """Close the journal."""
        self.journal.close()


def open_proofreading(
    store, threshold: float | None = None, *, user=None, lazy: bool = False
) -> ProofreadingSession:
    """Open a segmentation store for proofreading, replaying its journal if it has one.

    Parameters
    ----------
    store : str or path-like
        A store written by :func:`~napari_connectome.io.write_segmentation_store`.
    threshold : float, optional
        Threshold of the starting table; the store's by default.  An existing
        journal must have been started at the same one.
    user : str, optional
        Name recorded with the edits; the login name by default.
    lazy : bool, optional
        Keep the fragments and boundaries on disk
        (:func:`~napari_connectome.io.lazy_state.lazy_state_from_store`): they
        are read box by box, and the voxels splits rewrite are kept in memory.
        The same edits, journal and results as in memory, for volumes bigger
        than memory; ``state.labels_in(None)`` is then refused.

    Returns
    -------
    ProofreadingSession
        The state (with every journaled edit re-applied), its history and the
        journal, attached.

    Raises
    ------
    VolumeError
        If the store cannot be read.
    JournalError
        If the journal is corrupted before its last line or belongs to another
        starting state.
    """
    from .segmentation_store import read_segmentation_store

    stored = read_segmentation_store(store)
    threshold = stored.threshold if threshold is None else float(threshold)
    if lazy:
        from .lazy_state import lazy_state_from_store

        state = lazy_state_from_store(stored, threshold, edges=True)
    else:
        state = state_from_store(stored, threshold)
    path = journal_path(stored.path)
    if path.exists() and path.stat().st_size > 0:
        history = replay(state, path, user=user)
    else:
        history = History(state, user=user)
    journal = Journal.open(path, state, threshold=threshold, user=history.user)
    journal.attach(history)
    return ProofreadingSession(state, history, journal, stored.path)
