"""``napari-connectome export``: write the corrected labels of a segmentation store."""

from __future__ import annotations

from pathlib import Path

from ._common import CommandError, ProgressLine


def _state(store: Path):
    """Return the store's proofreading state with its journal replayed, read-only."""
    from ..io import read_segmentation_store
    from ..io.journal import journal_path, replay, state_from_store

    stored = read_segmentation_store(store)
    state = state_from_store(stored)
    path = journal_path(stored.path)
    edits = 0
    if path.exists() and path.stat().st_size > 0:
        edits = len(replay(state, path).entries)
    return stored, state, edits


def run(args) -> int:
    """Export the corrected labels of ``args.store`` to ``args.labels``.

    Parameters
    ----------
    args : argparse.Namespace
        ``store``, ``labels`` (the destination) and ``overwrite``.

    Returns
    -------
    int
        0 on success.

    Raises
    ------
    CommandError
        For a missing or invalid store, an unsupported destination suffix, or a
        destination that exists without ``--overwrite``; raised before any work.
    """
    from ..io import VolumeError
    from ..io.export import check_export_path, describe_export, export_labels
    from ..io.journal import JournalError

    store = Path(args.store).expanduser()
    if not store.exists():
        raise CommandError(f"no such segmentation store: {store}")
    try:
        dest = check_export_path(args.labels, overwrite=args.overwrite)
    except (ValueError, OSError) as error:
        raise CommandError(str(error)) from error
    try:
        stored, state, edits = _state(store)
    except (VolumeError, JournalError, OSError) as error:
        raise CommandError(str(error)) from error

    top = int(state.table.max()) if state.table.size else 0
    dtype = state.table.dtype if top > 2**32 - 1 else "uint32"
    progress = ProgressLine()
    try:
        export_labels(
            state.labels_in,
            dest,
            shape=state.fragments.shape,
            dtype=dtype,
            voxel_size=stored.voxel_size,
            overwrite=args.overwrite,
            progress=progress,
        )
    except (ValueError, OSError) as error:
        raise CommandError(str(error)) from error
    finally:
        progress.close()
    shape = "x".join(map(str, state.fragments.shape))
    plural = "s" if edits != 1 else ""
    print(
        f"wrote {dest}: {describe_export(dest)}, {shape} {dtype} labels, "
        f"{len(state.segments)} segments, {edits} proofreading edit{plural} applied"
    )
    return 0


def add_parser(sub) -> None:
    """Add the ``export`` subcommand to the subparsers ``sub``."""
    p = sub.add_parser(
        "export",
        help="export the proofread labels of a segmentation store (OME-Zarr, TIFF, HDF5)",
        description=(
            "Write the corrected segmentation of OUTPUT.zarr (its proofreading journal "
            "replayed; the store is not changed) to DEST, block by block. The format "
            "follows DEST's suffix: .ome.zarr/.zarr (OME-Zarr with a label pyramid), "
            ".tif/.tiff, .h5/.hdf5."
        ),
    )
    p.add_argument("store", help="the segmentation store (OUTPUT.zarr)")
    p.add_argument("--labels", required=True, metavar="DEST", help="the file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DEST")
    p.set_defaults(func=run)


__all__ = ["add_parser", "run"]
