"""Blockwise segmentation on dask: volumes larger than memory, on one machine or a cluster.

:func:`segment_blockwise` cuts the volume into blocks and runs, per block on a
dask.distributed worker, boundary prediction (reading the block grown by the
model's context), fragments and the block's region graph
(:func:`~napari_connectome.blockwise_work.run_block`).  The driver then stitches
the blocks (:mod:`napari_connectome.core.stitching`: ids shifted to be globally
unique, region-graph edges across block faces from the face-adjacent voxels) and
agglomerates the global graph once, while the workers write the boundaries and
the fragments of the store region by region; then the workers write the
segmentation (:mod:`napari_connectome.blockwise_write`). The store is the one the
whole-volume :func:`~napari_connectome.segmentation.save_result` writes.

Workers run on a local cluster (``"processes"``, the default, or ``"threads"``)
or on any running dask.distributed scheduler given its address
(``"tcp://HOST:PORT"``).  Finished blocks stay in a work folder beside the
output, so a failed block is retried (``retries``), a worker that dies has its
block rescheduled, and a rerun resumes from the finished blocks.

Examples
--------
>>> from napari_connectome.blockwise import segment_blockwise
>>> segment_blockwise("big.zarr:raw", "big_seg.zarr", voxel_size=(40, 4, 4),
...                   scheduler="processes", workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from .blockwise_stitch import load_graph
from .blockwise_work import (
    BlockwisePlan,
    block_done,
    model_halo,
    prepare_work,
    run_block,
    section_normalization,
    work_folder,
)
from .blockwise_write import StoreWriter
from .core.stitching import block_grid

__all__ = [
    "BlockwiseError",
    "check_block_size",
    "check_scheduler",
    "default_block_size",
    "open_client",
    "segment_blockwise",
]

#: Seconds to wait for a scheduler address to accept a connection.
CONNECT_TIMEOUT = 3.0


class BlockwiseError(RuntimeError):
    """A blockwise run cannot start or did not finish (the message says what to do)."""


def default_block_size(shape, voxel_size) -> tuple:
    """Block size used when none is given.

    Parameters
    ----------
    shape : sequence of int
        Volume shape.
    voxel_size : sequence of float
        Voxel size in nm.

    Returns
    -------
    tuple of int
        ``32 x 1024 x 1024`` for anisotropic stacks (less halo per voxel than
        narrower blocks; about 1.5 GB per worker), ``128 x 256 x 256`` for
        isotropic volumes, ``1024 x 1024`` in 2D; clipped to the shape.
    """
    if len(shape) == 2:
        size = (1024, 1024)
    else:
        aniso = float(voxel_size[0]) >= 2 * min(float(voxel_size[1]), float(voxel_size[2]))
        size = (32, 1024, 1024) if aniso else (128, 256, 256)
    return tuple(min(int(b), int(n)) for b, n in zip(size, shape, strict=True))


def check_block_size(block_size, shape, halo) -> tuple:
    """Check a block size against the volume and the model's context.

    Parameters
    ----------
    block_size : sequence of int
        Wanted core size per axis.
    shape : sequence of int
        Volume shape.
    halo : sequence of int
        The model's context in voxels per axis
        (:func:`~napari_connectome.blockwise_work.model_halo`).

    Returns
    -------
    tuple of int
        The block size, clipped to the volume.

    Raises
    ------
    BlockwiseError
        When the number of values is wrong, a value is not a positive integer,
        or a block is smaller than the model's context along an axis (where
        the volume is larger than that context).
    """
    axes = "Z Y X"[-(2 * len(shape) - 1) :]
    values = list(block_size)
    if len(values) != len(shape):
        raise BlockwiseError(
            f"--block-size needs {len(shape)} numbers ({axes}) for a volume of shape "
            f"{tuple(shape)}; got {values}"
        )
    if any(isinstance(v, bool) or int(v) != v or v < 1 for v in values):
        raise BlockwiseError(f"--block-size needs positive whole numbers; got {values}")
    clipped = tuple(min(int(b), int(n)) for b, n in zip(values, shape, strict=True))
    small = [
        (name, b, h)
        for name, b, h, n in zip(axes.split(), clipped, halo, shape, strict=True)
        if h and b < h and b < n
    ]
    if small:
        detail = ", ".join(f"{name}: {b} < {h}" for name, b, h in small)
        need = " ".join(str(max(b, h)) for b, h in zip(clipped, halo, strict=True))
        raise BlockwiseError(
            f"--block-size is smaller than the model's context ({detail} voxels); "
            f"blocks would be mostly halo. Use at least --block-size {need}"
        )
    return clipped


def check_scheduler(scheduler: str, timeout: float = CONNECT_TIMEOUT) -> str:
    """Check a scheduler choice; for an address, that something listens there.

    Parameters
    ----------
    scheduler : str
        ``"processes"``, ``"threads"`` or ``"tcp://HOST:PORT"``.
    timeout : float, optional
        Seconds to wait for the connection.

    Returns
    -------
    str
        The scheduler, normalised (``HOST:PORT`` gets ``tcp://``).

    Raises
    ------
    BlockwiseError
        For an unknown choice or an address where nothing answers.
    """
    if scheduler in ("processes", "threads"):
        return scheduler
    address = scheduler if "://" in scheduler else f"tcp://{scheduler}"
    parsed = urlparse(address)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme != "tcp" or not parsed.hostname or port is None:
        raise BlockwiseError(
            f"--scheduler must be 'processes', 'threads' or a dask scheduler address "
            f"tcp://HOST:PORT; got {scheduler!r}"
        )
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as error:
        raise BlockwiseError(
            f"cannot reach a dask scheduler at {address} ({error}); start one with "
            f"'dask scheduler' and 'dask worker {address}', or use --scheduler processes"
        ) from None
    return address


def open_client(scheduler: str, workers: int):
    """Connect to (or start) the dask cluster.

    Parameters
    ----------
    scheduler : str
        ``"processes"`` (a local cluster of ``workers`` single-threaded worker
        processes), ``"threads"`` (one process, ``workers`` threads) or an
        address checked by :func:`check_scheduler`.
    workers : int
        Local workers (ignored for an address: the cluster has its own).

    Returns
    -------
    client : distributed.Client
        The client.
    close : callable
        Closes the client and any cluster started here.
    """
    from distributed import Client, LocalCluster

    if scheduler in ("processes", "threads"):
        processes = scheduler == "processes"
        cluster = LocalCluster(
            n_workers=workers if processes else 1,
            threads_per_worker=1 if processes else workers,
            processes=processes,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)

        def close():
            client.close()
            cluster.close()

        return client, close
    try:
        client = Client(scheduler, timeout=f"{int(CONNECT_TIMEOUT * 3)}s")
    except OSError as error:
        raise BlockwiseError(
            f"cannot connect to the dask scheduler at {scheduler}: {error}"
        ) from None
    return client, client.close


def _run_blocks(client, plan, todo, retries, report) -> list[dict]:
    from distributed import as_completed

    if not todo:
        return []
    run = uuid.uuid4().hex[:8]  # keys of two runs on one cluster never collide
    futures = [
        client.submit(
            run_block, plan, block, retries=retries, pure=False, key=f"nc-{run}-{block.name}"
        )
        for block in todo
    ]
    name = {f.key: b.name for f, b in zip(futures, todo, strict=True)}
    done = []
    try:
        for future in as_completed(futures):
            try:
                done.append(future.result())
            except Exception as error:
                raise BlockwiseError(
                    f"block {name[future.key]} failed after {retries} retries: "
                    f"{type(error).__name__}: {error}. Finished blocks are kept in {plan.work}; "
                    "rerun the same command to resume"
                ) from error
            report(len(done) / len(todo), f"blocks {len(done)}/{len(todo)}")
    finally:
        client.cancel([f for f in futures if not f.done()])
    return done


def segment_blockwise(
    input: str,
    output,
    *,
    voxel_size,
    model: str = "bundled",
    model_config: dict | None = None,
    model_sha256: str = "",
    device: str = "cpu",
    threshold: float | None = None,
    augment: int | None = None,
    block_size=None,
    scheduler: str = "processes",
    workers: int = 2,
    retries: int = 2,
    overwrite: bool = False,
    attrs: dict | None = None,
    progress: Callable[[float, str], object] | None = None,
) -> dict:
    """Segment a volume block by block on dask and write a segmentation store.

    Parameters
    ----------
    input : str
        The volume, ``PATH`` or ``PATH:ARRAY``; every worker opens it (so on a
        cluster it must be on a shared file system).
    output : path-like
        The segmentation store to write (``OUTPUT.zarr``), same layout as
        :func:`~napari_connectome.segmentation.save_result`.
    voxel_size : sequence of float
        Voxel size in nm.
    model : str, optional
        ``"bundled"`` or a weights file (loaded by each worker).
    model_config : dict, optional
        The model's configuration (for its context); read from the file when omitted.
    model_sha256 : str, optional
        Digest of the weights: finished blocks are reused only for the same one.
    device : str, optional
        Where the workers run the model.
    threshold : float, optional
        Merge-score threshold of the stored segmentation (the default of
        :mod:`napari_connectome.segmentation` when omitted).
    augment : {1, 2, 4, 8}, optional
        In-plane views the model averages per tile (test-time augmentation), as
        in :func:`~napari_connectome.segmentation.segment_volume`; the model's
        default (:data:`~napari_connectome.models.inference.DEFAULT_AUGMENT`)
        when omitted. The block stage's cost grows about in proportion.
    block_size : sequence of int, optional
        Core size of a block (:func:`default_block_size` when omitted).
    scheduler : str, optional
        ``"processes"``, ``"threads"`` or ``"tcp://HOST:PORT"`` (see :func:`open_client`).
    workers : int, optional
        Workers of a local cluster.
    retries : int, optional
        Times a failed block is tried again.
    overwrite : bool, optional
        Replace an existing output.
    attrs : dict, optional
        More root attributes of the store.
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    dict
        ``path``, ``graph``, ``tree``, ``threshold``, ``augment``, ``blocks``
        (count), ``blocks_resumed``,
        ``block_size``, ``halo``, ``seconds`` per stage (``blocks``; ``stitch``;
        ``agglomerate``, while the workers write boundaries and fragments;
        ``write``, the rest of the store), ``workers`` (per worker pid: blocks
        run and peak resident bytes of the block tasks), ``notes``.

    Raises
    ------
    BlockwiseError
        For a bad block size, an unreachable scheduler, or a block that failed
        after its retries.
    OutputExistsError
        If the output exists and ``overwrite`` is False (checked before any work).
    """
    from .core.agglomeration import agglomerate
    from .io import OutputExistsError, check_output_path, open_volume
    from .io.segmentation_store import store_chunks
    from .models.tiling import choose_planes
    from .segmentation import DEFAULT_THRESHOLD

    report = progress or (lambda fraction, message: None)
    output = check_output_path(Path(output), overwrite=overwrite).absolute()
    if isinstance(workers, bool) or int(workers) != workers or workers < 1:
        raise BlockwiseError(f"--workers must be a positive whole number; got {workers}")
    scheduler = check_scheduler(scheduler)
    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    augment = _check_augment(augment)
    volume = open_volume(input)
    input, model = _absolute(input), model if model == "bundled" else str(Path(model).resolve())
    shape = tuple(int(n) for n in volume.shape)
    vs = tuple(float(v) for v in voxel_size)
    if model_config is None:
        from .models import load_model

        model_config = load_model(model)[1]
    orientations = ("xy",) if len(shape) == 2 else choose_planes(vs)
    halo = model_halo(model_config, vs, orientations)
    block_size = check_block_size(block_size or default_block_size(shape, vs), shape, halo)
    blocks = block_grid(shape, block_size, halo)
    report(0.0, "section statistics")
    normalization = (
        section_normalization(volume.data, model_config.get("normalization"))
        if orientations == ("xy",)
        else ()
    )
    plan = BlockwisePlan(
        input=str(input),
        shape=shape,
        voxel_size=vs,
        block_size=block_size,
        halo=halo,
        model=str(model),
        model_sha256=model_sha256,
        device=str(device),
        work=str(work_folder(output)),
        normalization=normalization,
        augment=augment,
    )
    seconds = {}
    start = time.perf_counter()
    resumed, note = prepare_work(plan, store_chunks(shape, vs))
    notes = [note] if note else []
    todo = [b for b in blocks if not block_done(plan, b)]
    finished = len(blocks) - len(todo)
    report(0.0, f"blocks 0/{len(todo)}" + (f" ({finished} done before)" if finished else ""))
    client, close = open_client(scheduler, workers)
    writer = None
    try:
        done = _run_blocks(client, plan, todo, retries, lambda f, m: report(0.8 * f, m))
        seconds["blocks"] = time.perf_counter() - start
        report(0.8, "stitching blocks")
        tick = time.perf_counter()
        graph, offsets, table = load_graph(plan, blocks)
        stored = {
            "voxel_size": list(vs),
            "threshold": threshold,
            "model": {"name": str(model), "config": model_config, "augment": augment},
            "blockwise": {
                "block_size": list(block_size),
                "halo": list(halo),
                "scheduler": scheduler,
                "workers": int(workers),
            },
            **(attrs or {}),
        }
        writer = StoreWriter(
            client, plan, blocks, offsets, table, output, stored, retries, overwrite
        )
        writer.start_fragments()  # the workers write boundaries and fragments meanwhile
        seconds["stitch"] = time.perf_counter() - tick
        report(0.82, "agglomerating")
        tick = time.perf_counter()
        tree = agglomerate(graph)
        seconds["agglomerate"] = time.perf_counter() - tick
        tick = time.perf_counter()
        try:
            writer.finish(graph, tree, lambda f, m: report(0.85 + 0.15 * f, m))
        except OutputExistsError:
            raise
        except Exception as error:
            raise BlockwiseError(
                f"writing the store failed after {retries} retries: "
                f"{type(error).__name__}: {error}. Finished blocks are kept in {plan.work}; "
                "rerun the same command to resume"
            ) from error
        writer = None
        seconds["write"] = time.perf_counter() - tick
    finally:
        if writer is not None:
            writer.abort()
        close()
    _remove(Path(plan.work))
    per_worker: dict = {}
    for row in done:
        entry = per_worker.setdefault(row["pid"], {"blocks": 0, "peak_rss": 0})
        entry["blocks"] += 1
        entry["peak_rss"] = max(entry["peak_rss"], row["peak_rss"])
    report(1.0, "done")
    return {
        "path": output,
        "graph": graph,
        "tree": tree,
        "threshold": threshold,
        "augment": augment,
        "blocks": len(blocks),
        "blocks_resumed": len(blocks) - len(todo) if resumed else 0,
        "block_size": block_size,
        "halo": halo,
        "seconds": seconds,
        "workers": per_worker,
        "notes": notes,
    }


def _check_augment(augment) -> int:
    """Return the number of test-time views: the model's default, or a checked choice."""
    from .models.inference import DEFAULT_AUGMENT, symmetries

    if augment is None:
        return int(DEFAULT_AUGMENT)
    try:
        symmetries(augment)
    except ValueError as error:
        raise BlockwiseError(str(error)) from None
    return int(augment)


def _absolute(spec: str) -> str:
    """Return the volume spec with an absolute path: workers may run in other folders."""
    from .io import parse_volume_spec

    path, array = parse_volume_spec(spec)
    path = path.expanduser().resolve()
    return f"{path}:{array}" if array else str(path)


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def blocks_needed(shape, block_size) -> int:
    """Count the blocks of a grid (for messages and benchmarks).

    Parameters
    ----------
    shape : sequence of int
        Volume shape.
    block_size : sequence of int
        Core size.

    Returns
    -------
    int
        Product over the axes of ``ceil(shape / block_size)``.
    """
    return int(np.prod([math.ceil(n / b) for n, b in zip(shape, block_size, strict=True)]))
