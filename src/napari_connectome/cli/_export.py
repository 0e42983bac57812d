"""``napari-connectome export``: the corrected labels, connectome and synapse table of a store."""

from __future__ import annotations

from pathlib import Path

from ..core.connectome import SYNAPSE_COLUMNS
from ._common import CommandError, ProgressLine


def _state(store: Path):
    """Return the store's corrected state, its journal replayed; volumes stay on disk.

    The state reads its fragments and boundaries box by box
    (:func:`~napari_connectome.io.lazy_state.open_corrected`), so the export
    streams block by block with memory bounded by the block and the tables.
    """
    from ..io.lazy_state import open_corrected

    return open_corrected(store)


def _check_csv(path, overwrite: bool, flag: str) -> Path:
    dest = Path(path).expanduser()
    if dest.suffix.lower() != ".csv":
        raise CommandError(f"{flag} writes a CSV file and must end in .csv; got '{dest}'")
    if dest.exists() and not overwrite:
        raise CommandError(f"'{dest}' exists; pass --overwrite to replace it")
    if not dest.parent.is_dir():
        raise CommandError(f"the folder of '{dest}' does not exist")
    return dest


def _export_synapses(store: Path, corrected, connectome, synapse_table) -> str:
    """Write the connectome and synapse table with partners from the proofread state."""
    from ..core.connectome import connectome_edges, write_edges_csv, write_synapse_csv
    from ..io import VolumeError
    from ..io.synapse_store import read_synapse_store

    state = corrected.state
    try:
        stored = read_synapse_store(store, segment_table=state.table)
    except VolumeError as error:
        raise CommandError(str(error)) from error
    table = stored.table
    if table is None:
        raise CommandError(
            f"{store} holds synapses without partners; run 'napari-connectome segment "
            "... --synapses' again to detect them with the segmentation"
        )
    if stored.attrs.get("partners_from") == "fragments":
        # splits may add fragments: re-read the probes inside the rewritten box only
        patched = corrected.patched_box()
        if patched is None:
            table.update(state.table)
        else:
            table.update(state.table, fragments=state.fragments, box=patched)
    parts = []
    if synapse_table is not None:
        write_synapse_csv(synapse_table, table)
        parts.append(f"{synapse_table} ({len(table)} synapses, {len(table.rows())} rows)")
    if connectome is not None:
        edges = connectome_edges(table)
        write_edges_csv(connectome, edges)
        parts.append(f"{connectome} ({len(edges)} edges, {int(edges['count'].sum())} synapses)")
    return ", ".join(parts)


def run(args) -> int:
    """Export the corrected labels, connectome and/or synapse table of ``args.store``.

    Parameters
    ----------
    args : argparse.Namespace
        ``store``, ``labels`` (a destination or None), ``connectome`` and
        ``synapse_table`` (CSV paths or None) and ``overwrite``.

    Returns
    -------
    int
        0 on success.

    Raises
    ------
    CommandError
        For a missing or invalid store, nothing to export, an unsupported
        destination suffix, a destination that exists without ``--overwrite``,
        or a store without synapses when CSVs are asked for; raised before any work.
    """
    from ..io import VolumeError
    from ..io.export import check_export_path, describe_export, export_labels
    from ..io.journal import JournalError

    connectome = getattr(args, "connectome", None)
    synapse_table = getattr(args, "synapse_table", None)
    if args.labels is None and connectome is None and synapse_table is None:
        raise CommandError("nothing to export: give --labels, --connectome and/or --synapse-table")
    store = Path(args.store).expanduser()
    if not store.exists():
        raise CommandError(f"no such segmentation store: {store}")
    dest = None
    try:
        if args.labels is not None:
            dest = check_export_path(args.labels, overwrite=args.overwrite)
    except (ValueError, OSError) as error:
        raise CommandError(str(error)) from error
    if connectome is not None:
        connectome = _check_csv(connectome, args.overwrite, "--connectome")
    if synapse_table is not None:
        synapse_table = _check_csv(synapse_table, args.overwrite, "--synapse-table")
    if connectome is not None or synapse_table is not None:
        from ..io.synapse_store import has_synapses

        if not has_synapses(store):
            raise CommandError(
                f"{store} holds no synapses: run 'napari-connectome segment INPUT {store} "
                "--synapses' (or detect them in the Synapses dock) first"
            )
    try:
        corrected = _state(store)
    except (VolumeError, JournalError, OSError) as error:
        raise CommandError(str(error)) from error
    state, edits = corrected.state, corrected.edits
    plural = "s" if edits != 1 else ""
    if dest is not None:
        dtype = corrected.labels_dtype
        progress = ProgressLine()
        try:
            export_labels(
                state.labels_in,
                dest,
                shape=corrected.shape,
                dtype=dtype,
                voxel_size=corrected.stored.voxel_size,
                source_chunks=corrected.stored.fragments.chunks,
                overwrite=args.overwrite,
                progress=progress,
            )
        except (ValueError, OSError) as error:
            raise CommandError(str(error)) from error
        finally:
            progress.close()
        shape = "x".join(map(str, corrected.shape))
        print(
            f"wrote {dest}: {describe_export(dest)}, {shape} {dtype} labels, "
            f"{len(state.segments)} segments, {edits} proofreading edit{plural} applied"
        )
    if connectome is not None or synapse_table is not None:
        summary = _export_synapses(store, corrected, connectome, synapse_table)
        print(
            f"wrote {summary}; partners from the proofread segmentation "
            f"({edits} edit{plural} applied)"
        )
    return 0


def add_parser(sub) -> None:
    """Add the ``export`` subcommand to the subparsers ``sub``."""
    p = sub.add_parser(
        "export",
        help="export the proofread labels (OME-Zarr, TIFF, HDF5), connectome and synapse "
        "table (CSV) of a segmentation store",
        description=(
            "Write the corrected segmentation of OUTPUT.zarr (its proofreading journal "
            "replayed; the store is not changed) to DEST, block by block. The format "
            "follows DEST's suffix: .ome.zarr/.zarr (OME-Zarr with a label pyramid), "
            ".tif/.tiff, .h5/.hdf5. --connectome and --synapse-table write the synapses "
            "found by 'segment --synapses' as CSV, with partners from the proofread "
            "segmentation: edges pre,post,count and one row per synapse and postsynaptic "
            f"partner {','.join(SYNAPSE_COLUMNS)} (nm; confidence: the detection's, "
            "partner_confidence: the pair's)."
        ),
    )
    p.add_argument("store", help="the segmentation store (OUTPUT.zarr)")
    p.add_argument("--labels", metavar="DEST", help="the labels file to write")
    p.add_argument(
        "--connectome", metavar="EDGES.csv", help="write the connectome as pre,post,count"
    )
    p.add_argument(
        "--synapse-table",
        metavar="SYNAPSES.csv",
        help=f"write the synapse table as {','.join(SYNAPSE_COLUMNS)} (nm)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)


__all__ = ["add_parser", "run"]
