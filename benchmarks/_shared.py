"""Helpers shared by the benchmark scripts.

Each script's own folder is on ``sys.path`` when it runs, so ``from _shared import ...``
works from any working directory.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def truth_2d_from_membranes(membranes: np.ndarray) -> np.ndarray:
    """Per-section connected components of ``membranes == 0``, ids unique across sections.

    The truth of a volume with membrane masks but no neuron ids (VNC stack 1).
    """
    out = np.zeros(membranes.shape, np.uint64)
    offset = 0
    for z, plane in enumerate(membranes):
        labels, n = ndi.label(plane == 0)
        out[z] = np.where(labels > 0, labels.astype(np.uint64) + offset, 0)
        offset += n
    return out
