"""The work of one block of a blockwise segmentation, and the work folder that keeps it.

A blockwise run keeps its intermediate results in a work folder beside the
output (``.OUTPUT.zarr.blockwise/``) so that a crashed or cancelled run resumes
where it stopped::

    .OUTPUT.zarr.blockwise/
        manifest.json       what the blocks were computed from (input, shape,
                            voxel size, block size, halo, model); a rerun with
                            other settings starts again
        scratch.zarr/       boundaries (uint8, p = value / 255) and fragments
                            (uint32 block-local ids) of every finished block,
                            chunked so that no chunk straddles two blocks
        blocks/bZ_Y_X.npz   one per finished block (its done mark, written
                            last and atomically): the block's region graph in
                            local ids and the fragment ids and boundary values
                            of its six face planes, for stitching

:func:`run_block` is what a dask worker runs for one block: read the block
grown by the model's halo, predict boundaries, crop to the core, make
fragments and the block's region graph, write them. It is idempotent: a
retried or rerun block overwrites the same chunks and mark.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .core.edge_store import EDGE_FIELDS
from .core.fragments import make_fragments
from .core.region_graph import build_region_graph
from .core.stitching import Block

__all__ = [
    "BlockwisePlan",
    "GRAPH_FIELDS",
    "block_done",
    "mark_path",
    "model_halo",
    "prepare_work",
    "run_block",
    "section_normalization",
    "scratch_chunks",
    "work_folder",
]

_MANIFEST_VERSION = 2
#: Voxels of context (at most the model's halo) around a core for making fragments, so
#: that a fragment cut by a block face is made alike on both sides and can be joined.
FRAGMENT_HALO = 32
#: RegionGraph fields a block's mark keeps.
GRAPH_FIELDS = (*EDGE_FIELDS, "fragment_sizes", "fragment_bboxes")


@dataclass(frozen=True)
class BlockwisePlan:
    """Everything a worker needs to process a block (small and picklable).

    Attributes
    ----------
    input : str
        The volume, ``PATH`` or ``PATH:ARRAY`` as :func:`~napari_connectome.io.open_volume` reads.
    shape : tuple of int
        Volume shape.
    voxel_size : tuple of float
        Voxel size in nm.
    block_size : tuple of int
        Core size of a block.
    halo : tuple of int
        Voxels of context read around a core, per axis.
    model : str
        ``"bundled"`` or a weights file.
    model_sha256 : str
        Digest of the weights (decides whether finished blocks can be reused).
    device : str
        Where the model runs in the workers (``cpu``, ``cuda``...).
    work : str
        The work folder.
    threads : int
        Torch and fragment threads per block task (parallelism comes from the workers).
    augment : int
        In-plane views the model averages per tile (test-time augmentation; the
        default is :data:`~napari_connectome.models.inference.DEFAULT_AUGMENT`).
    normalization : tuple
        Per section ``(low, span)`` of the whole sections
        (:func:`section_normalization`), for volumes predicted section by
        section; empty to let the model normalise each block's planes.
    """

    input: str
    shape: tuple
    voxel_size: tuple
    block_size: tuple
    halo: tuple
    model: str
    model_sha256: str
    device: str
    work: str
    threads: int = 1
    normalization: tuple = ()
    augment: int = 4  # models.inference.DEFAULT_AUGMENT (not imported: no torch here)

    def manifest(self) -> dict:
        """Return the settings that decide the blocks' results (the work folder's manifest)."""
        keep = ("input", "shape", "voxel_size", "block_size", "halo", "model_sha256", "augment")
        plan = asdict(self)
        out = {key: plan[key] for key in keep}
        out = json.loads(json.dumps(out))  # tuples -> lists, as read back
        out["version"] = _MANIFEST_VERSION
        return out


def work_folder(output) -> Path:
    """Return the work folder of a blockwise run writing ``output``.

    Parameters
    ----------
    output : path-like
        The segmentation store to write.

    Returns
    -------
    pathlib.Path
        ``.NAME.blockwise`` beside ``output``.
    """
    output = Path(output).expanduser().absolute()
    return output.parent / f".{output.name}.blockwise"


def model_halo(config: dict, voxel_size, orientations) -> tuple:
    """Voxels of context the model needs around a block, per axis.

    Parameters
    ----------
    config : dict
        Model configuration (``context_px`` and ``pixel_size_nm``).
    voxel_size : sequence of float
        Voxel size in nm (2 or 3 values).
    orientations : sequence of str
        Predicted planes (``"xy"``, ``"xz"``, ``"yz"``); ignored for 2D.

    Returns
    -------
    tuple of int
        The model's context (``context_px`` canonical pixels) in voxels along
        every axis that lies in a predicted plane, 0 along the others (z for
        anisotropic stacks, predicted section by section).
    """
    from .models.unet import model_context

    context = float(config.get("context_px") or model_context(int(config.get("depth", 4))))
    pixel = float(config.get("pixel_size_nm", 8.0))
    sizes = [float(v) for v in voxel_size]
    if len(sizes) == 2:
        used = {0, 1}
    else:
        planes = {"xy": (1, 2), "xz": (0, 2), "yz": (0, 1)}
        used = {axis for name in orientations for axis in planes[name]}
    return tuple(
        int(math.ceil(context * pixel / s)) if axis in used else 0 for axis, s in enumerate(sizes)
    )


def scratch_chunks(block_size, store_chunks) -> tuple:
    """Chunk shape of the scratch arrays: no chunk straddles two blocks.

    Parameters
    ----------
    block_size : sequence of int
        Core size of a block.
    store_chunks : sequence of int
        The chunk shape wanted (the final store's).

    Returns
    -------
    tuple of int
        Per axis the largest divisor of the block size not above the wanted chunk.
    """
    out = []
    for b, c in zip(block_size, store_chunks, strict=True):
        b, c = int(b), max(1, int(c))
        out.append(max(d for d in range(1, min(b, c) + 1) if b % d == 0))
    return tuple(out)


def prepare_work(plan: BlockwisePlan, store_chunks) -> tuple[bool, str | None]:
    """Create the work folder, or check that an existing one can be resumed.

    Parameters
    ----------
    plan : BlockwisePlan
        The run.
    store_chunks : sequence of int
        Chunk shape of the final store (the scratch arrays use divisors of the block size).

    Returns
    -------
    resumed : bool
        True when an earlier run's folder with the same settings is kept.
    note : str or None
        Why an earlier folder was discarded, if one was.
    """
    import zarr
    from numcodecs import Blosc

    work = Path(plan.work)
    manifest = plan.manifest()
    note = None
    if work.exists():
        try:
            old = json.loads((work / "manifest.json").read_text())
        except (OSError, ValueError):
            old = None
        if old == manifest and (work / "scratch.zarr").is_dir():
            return True, None
        note = f"discarded the unfinished run in {work}: it had other settings"
        shutil.rmtree(work)
    (work / "blocks").mkdir(parents=True)
    chunks = scratch_chunks(plan.block_size, store_chunks)
    root = zarr.open_group(str(work / "scratch.zarr"), mode="w", zarr_format=2)
    codec = Blosc(cname="zstd", clevel=1, shuffle=Blosc.SHUFFLE)
    for name, dtype in (("boundaries", np.uint8), ("fragments", np.uint32)):
        root.create_array(
            name, shape=plan.shape, dtype=dtype, chunks=chunks, compressors=codec, fill_value=0
        )
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return False, note


def mark_path(plan: BlockwisePlan, block: Block) -> Path:
    """Return the done mark of a block (its results for stitching)."""
    return Path(plan.work) / "blocks" / f"{block.name}.npz"


def block_done(plan: BlockwisePlan, block: Block) -> bool:
    """Whether a block's results are complete in the work folder.

    Parameters
    ----------
    plan : BlockwisePlan
        The run.
    block : Block
        The block.

    Returns
    -------
    bool
        True when its mark (written last, atomically) exists.
    """
    return mark_path(plan, block).is_file()


_CACHE: dict = {}


def _stamp(spec: str) -> tuple:
    """Modification time and size of a file or folder (cache keys: a rewritten file is new)."""
    from .io import parse_volume_spec

    try:
        info = Path(parse_volume_spec(spec)[0]).stat()
    except (OSError, ValueError):
        return ()
    return (info.st_mtime_ns, info.st_size)


def _cached(key, make):
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def section_normalization(volume, method: dict | None) -> tuple:
    """Grey-value normalisation of every section of the whole volume, as one plane sees it.

    The model normalises each plane it predicts; a block's piece of a section
    would get statistics of its own. For volumes predicted section by section,
    the blocks use these whole-section figures instead, computed exactly as
    :func:`~napari_connectome.models.tiling.normalize_plane` does.

    Parameters
    ----------
    volume : array-like
        ``(z, y, x)`` or ``(y, x)``, read one section at a time.
    method : dict or None
        The model's ``normalization`` configuration.

    Returns
    -------
    tuple of (float, float)
        Per section ``(low, span)``: normalised = ``clip((x - low) / span, 0, 1)``;
        ``span`` 0 for a constant section (normalised to 0).
    """
    import math

    method = method or {"method": "percentile", "low": 1.0, "high": 99.0}
    out = []
    for plane in _sections(volume):
        data = np.asarray(plane, dtype=np.float32)
        stride = max(1, int(math.sqrt(data.size / 1_000_000)))
        sample = data[::stride, ::stride]
        if method.get("method") == "meanstd":
            mean, std = float(sample.mean()), float(sample.std())
            out.append((mean - 3.0 * std, 6.0 * std) if std > 0 else (0.0, 0.0))
            continue
        low, high = np.percentile(sample, [method.get("low", 1.0), method.get("high", 99.0)])
        if high <= low:
            low, high = float(sample.min()), float(sample.max())
        out.append((float(low), float(high - low) if high > low else 0.0))
    return tuple(out)


def _sections(volume):
    """Yield the sections of a volume, read a slab of about 64 MiB at a time."""
    if len(volume.shape) == 2:
        yield volume
        return
    plane = int(np.prod(volume.shape[1:]))
    step = max(1, 2**26 // max(1, plane))
    for z0 in range(0, volume.shape[0], step):
        slab = np.asarray(volume[z0 : z0 + step])
        yield from slab


def _normalised(plan: BlockwisePlan, block: Block, raw: np.ndarray) -> np.ndarray | None:
    """Return the block normalised with the whole sections' figures (None if not given)."""
    if not plan.normalization:
        return None
    first = block.outer[0].start if raw.ndim == 3 else 0
    out = np.empty(raw.shape, np.float32)
    for k in range(raw.shape[0] if raw.ndim == 3 else 1):
        low, span = plan.normalization[first + k]
        plane = raw[k] if raw.ndim == 3 else raw
        target = out[k] if raw.ndim == 3 else out
        if span > 0:
            np.subtract(plane, np.float32(low), out=target, dtype=np.float32)
            target /= np.float32(span)
            np.clip(target, 0.0, 1.0, out=target)
        else:
            target[...] = 0.0
    return out


def _predict(plan: BlockwisePlan, raw: np.ndarray, block: Block) -> np.ndarray:
    from .models import load_model, predict_boundaries

    if raw.size == 0 or raw.min() == raw.max():  # nothing to see (e.g. padding): all boundary
        return np.ones(raw.shape, np.float32)
    import torch

    torch.set_num_threads(max(1, plan.threads))
    module, config = _cached(
        ("model", plan.model, plan.model_sha256, _stamp(plan.model), plan.device),
        lambda: load_model(plan.model, device=plan.device),
    )
    normalised = _normalised(plan, block, raw)
    if normalised is not None and normalised.min() < normalised.max():
        # already normalised: min..max of each plane maps to itself
        identity = {**config, "normalization": {"method": "percentile", "low": 0, "high": 100}}
        return predict_boundaries(
            normalised,
            plan.voxel_size,
            (module, identity),
            device=plan.device,
            augment=plan.augment,
        )
    return predict_boundaries(
        raw, plan.voxel_size, (module, config), device=plan.device, augment=plan.augment
    )


def _fragment_halo(plan: BlockwisePlan) -> tuple:
    """Context of the fragments around a core: none across sections made one by one."""
    from .core.fragments import is_anisotropic

    per_section = len(plan.shape) == 3 and is_anisotropic(plan.voxel_size)
    return tuple(
        0 if (per_section and axis == 0) else min(FRAGMENT_HALO, h)
        for axis, h in enumerate(plan.halo)
    )


def _fragments(plan: BlockwisePlan, block: Block, boundaries: np.ndarray):
    """Fragments of the core grown by the fragment halo, then cut to the core.

    Returns the core's ids (consecutive ``1..n``) and, per face, the ids the
    block gives the plane just beyond the face (0 where that fragment has no
    voxel in the core, or there is no such plane).
    """
    fh = _fragment_halo(plan)
    box = tuple(
        slice(max(o.start, c.start - h), min(o.stop, c.stop + h))
        for c, o, h in zip(block.core, block.outer, fh, strict=True)
    )
    pairs = zip(box, block.outer, strict=True)
    local = tuple(slice(b.start - o.start, b.stop - o.start) for b, o in pairs)
    grown = make_fragments(boundaries[local], plan.voxel_size, n_threads=max(1, plan.threads))
    pairs = zip(block.core, box, strict=True)
    core = tuple(slice(c.start - b.start, c.stop - b.start) for c, b in pairs)
    inside = grown[core]
    present = np.zeros(int(grown.max()) + 1, dtype=bool)
    present[inside.ravel()] = True
    present[0] = False
    table = np.cumsum(present).astype(np.uint32)
    table[0] = 0
    table[~present] = 0
    ids = table[inside]
    seen = {}
    for axis in range(grown.ndim):
        for side, index in (("lo", core[axis].start - 1), ("hi", core[axis].stop)):
            plane = [*core]
            if 0 <= index < grown.shape[axis]:
                plane[axis] = index
                seen[f"{side}{axis}_seen"] = table[grown[tuple(plane)]]
            else:  # no plane there (the volume's edge, or no halo along this axis)
                seen[f"{side}{axis}_seen"] = np.zeros_like(np.take(ids, 0, axis=axis))
    return ids, seen


def _faces(ids: np.ndarray, q: np.ndarray) -> dict:
    out = {}
    for axis in range(ids.ndim):
        for side, index in (("lo", 0), ("hi", -1)):
            key = [slice(None)] * ids.ndim
            key[axis] = index
            out[f"{side}{axis}_ids"] = ids[tuple(key)]
            out[f"{side}{axis}_q"] = q[tuple(key)]
    return out


def run_block(plan: BlockwisePlan, block: Block) -> dict:
    """Segment one block and write its results to the work folder.

    Parameters
    ----------
    plan : BlockwisePlan
        The run.
    block : Block
        The block.

    Returns
    -------
    dict
        ``block`` (name), ``n_fragments``, ``n_edges``, ``seconds``, ``pid`` and
        ``peak_rss`` (bytes: the worker process's peak resident memory so far).
    """
    import zarr

    from .io import open_volume

    start = time.perf_counter()
    volume = _cached(
        ("volume", plan.input, _stamp(plan.input)), lambda: open_volume(plan.input).data
    )
    raw = np.asarray(volume[block.outer])
    outer = np.ascontiguousarray(_predict(plan, raw, block), dtype=np.float32)
    del raw
    # work from the 8-bit map the store keeps: rerunning the whole-volume pipeline on the
    # stored boundaries then gives this result (up to the stitching)
    np.clip(outer, 0.0, 1.0, out=outer)
    outer *= np.float32(255.0)
    np.rint(outer, out=outer)
    outer /= np.float32(255.0)
    ids, seen = _fragments(plan, block, outer)
    boundaries = np.ascontiguousarray(outer[block.inner])
    del outer
    q = np.rint(boundaries * np.float32(255.0)).astype(np.uint8)
    n = int(ids.max())
    graph = build_region_graph(ids, boundaries, plan.voxel_size, n_fragments=n)
    del boundaries
    scratch = zarr.open_group(str(Path(plan.work) / "scratch.zarr"), mode="r+")
    scratch["boundaries"][block.core] = q
    scratch["fragments"][block.core] = ids
    arrays = {name: getattr(graph, name) for name in GRAPH_FIELDS}
    arrays.update(_faces(ids, q))
    arrays.update(seen)
    mark = mark_path(plan, block)
    tmp = mark.with_name(f".{mark.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, origin=np.asarray(block.origin), **arrays)
    os.replace(tmp, mark)  # the done mark appears complete or not at all
    return {
        "block": block.name,
        "n_fragments": n,
        "n_edges": graph.n_edges,
        "seconds": time.perf_counter() - start,
        "pid": os.getpid(),
        "peak_rss": peak_resident_bytes(),
    }


def peak_resident_bytes() -> int:
    """Return this process's peak resident memory in bytes, counted since it started.

    ``VmHWM`` from ``/proc/self/status`` where there is one: ``ru_maxrss`` survives
    ``execve``, so a worker spawned by a big driver would report the driver's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
