"""Write the bundled sample phantom: 24 x 256 x 256 at (40, 4, 4) nm, seed 0.

A clean volume (no missing or shifted sections) with its exact truth, saved
as one compressed ``.npz`` (see :func:`napari_connectome.synthetic.save_phantom`).

Usage::

    python scripts/make_sample_data.py [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_connectome.synthetic import make_phantom, save_phantom  # noqa: E402

SHAPE = (24, 256, 256)
VOXEL_SIZE = (40.0, 4.0, 4.0)
SEED = 0
MAX_BYTES = 5_000_000


def main(argv=None) -> int:
    """Make and save the sample; fail if it is too large to bundle."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "sample_data" / "phantom_sample.npz")
    args = parser.parse_args(argv)
    phantom = make_phantom(SHAPE, VOXEL_SIZE, seed=SEED)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_phantom(phantom, args.out)
    size = args.out.stat().st_size
    n_syn = len(set(phantom.synapse_table["id"].tolist()))
    print(
        f"wrote {args.out}: {size / 1e6:.2f} MB, raw {phantom.raw.shape} at {VOXEL_SIZE} nm, "
        f"{int(phantom.neurons.max())} neurons, {int(phantom.mitochondria.max())} mitochondria, "
        f"{n_syn} synapses ({len(phantom.synapse_table)} partner rows)"
    )
    if size > MAX_BYTES:
        print(f"error: the sample is over {MAX_BYTES / 1e6:.0f} MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
