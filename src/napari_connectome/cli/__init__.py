"""The ``napari-connectome`` command line: the plugin's work without a screen.

Subcommands
-----------
demo
    Open napari with the sample phantom, its truth and the plugin's docks, and segment
    it; with ``--headless`` (or no display) write the outputs and window screenshots.
evaluate
    Score a segmentation against ground truth (VOI split/merge, adapted Rand).
phantom
    Write an EM phantom volume with its exact truth to an ``.npz`` file.
segment
    Segment neurons in an EM volume (boundary model, fragments, agglomeration) and
    write the whole segmentation state to a zarr store.
proofread
    Merge, split, lock, undo and redo on a segmentation store, journaled like the dock.
review
    List a store's review queue (false splits and merges with suggested fixes); with
    ``--simulate GROUND_TRUTH`` a simulated proofreader's VOI / adapted Rand curve.
export
    Write the proofread labels of a segmentation store to OME-Zarr, TIFF or HDF5.
train
    Train the boundary model on real volumes and phantoms (reproduces the shipped weights).
"""

from __future__ import annotations

import argparse
import sys

from . import _commands, _export, _proofread, _review, _segment
from ._common import CommandError


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for all subcommands.

    Returns
    -------
    argparse.ArgumentParser
        The parser; each subcommand sets ``func``.
    """
    parser = argparse.ArgumentParser(
        prog="napari-connectome",
        description="Connectomics from EM volumes: segment, proofread, review, export.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    _commands.add_parsers(sub)
    _segment.add_parser(sub)
    _proofread.add_parser(sub)
    _review.add_parser(sub)
    _export.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        The exit status: 0 on success, 2 on a user error.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # its options belong to the training module's parser
        argv = ["train", "--", *argv[1:]]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CommandError as error:
        print(f"napari-connectome {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
