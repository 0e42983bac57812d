"""Write the segmentation store of a blockwise run on the dask workers, region by region.

The last step of :func:`~napari_connectome.blockwise.segment_blockwise`. The store
is the one :func:`~napari_connectome.io.write_segmentation_store` writes (same
arrays, chunks, compression and attributes, written to a hidden sibling and renamed
into place), but its three volumes are written by tasks on the workers, each task
one region of whole store chunks (so no two tasks touch a chunk):

- as soon as the blocks are stitched, the boundaries (copied from the scratch map)
  and the fragments (block-local ids shifted and joined by the stitching table);
  these run while the driver agglomerates the global graph;
- once the merge order is known, the segmentation (the fragments through the
  table at the threshold).

The driver writes only the region graph, the merge tree and the attributes. The
workers read their lookup tables from the work folder (on a cluster it is on the
shared file system, like the input). Tasks are idempotent, so a failed one is retried
and a killed worker's task runs elsewhere.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .blockwise_stitch import GlobalFragments
from .blockwise_work import BlockwisePlan
from .core.stitching import Block

__all__ = ["StoreWriter", "write_regions", "write_region"]

#: Voxels a write task holds at once (a slab of its region), about 64 MiB of uint64.
SLAB_VOXELS = 2**23


def write_regions(shape, chunks, block_size) -> list[tuple[slice, ...]]:
    """Cut the volume into write regions of whole store chunks, about one block each.

    Parameters
    ----------
    shape : sequence of int
        Volume shape.
    chunks : sequence of int
        Chunk shape of the store.
    block_size : sequence of int
        Core size of a block (the regions' size, rounded up to whole chunks).

    Returns
    -------
    list of tuple of slice
        Disjoint regions covering the volume; every chunk lies in exactly one.
    """
    steps = [
        max(1, math.ceil(int(b) / int(c))) * int(c)
        for b, c in zip(block_size, chunks, strict=True)
    ]
    axes = [
        [slice(start, min(start + step, int(n))) for start in range(0, int(n), step)]
        for n, step in zip(shape, steps, strict=True)
    ]
    regions: list[tuple[slice, ...]] = [()]
    for cuts in axes:
        regions = [(*r, c) for r in regions for c in cuts]
    return regions


def _tables_path(plan: BlockwisePlan, name: str) -> Path:
    return Path(plan.work) / f"{name}.npy"  # name carries the run's token


_TABLES: dict = {}


def _table(path: Path) -> np.ndarray:
    """Load a lookup table once per worker process (file names are unique per run)."""
    table = _TABLES.get(str(path))
    if table is None:
        table = np.load(path)
        if len(_TABLES) >= 4:
            _TABLES.clear()
        _TABLES[str(path)] = table
    return table


def write_region(
    plan: BlockwisePlan,
    blocks: list[Block],
    offsets: np.ndarray,
    store: str,
    region: tuple[slice, ...],
    what: str,
    chunk_depth: int,
    token: str,
) -> int:
    """Write one region of the store's volumes (what a worker runs).

    Parameters
    ----------
    plan : BlockwisePlan
        The run (its work folder holds the scratch volumes and the tables).
    blocks : list of Block
        The grid, in the order of ``offsets``.
    offsets : numpy.ndarray
        Id offset of each block (see :func:`~napari_connectome.blockwise_stitch.load_graph`).
    store : str
        The (temporary) store being written; its arrays exist.
    region : tuple of slice
        The region, whole chunks of the store.
    what : str
        ``"fragments"`` (boundaries and fragments) or ``"segmentation"``.
    chunk_depth : int
        The store's chunk size along the first axis (slabs are whole chunks deep).
    token : str
        The writer's token (names its tables in the work folder).

    Returns
    -------
    int
        Voxels written.
    """
    import zarr

    scratch = zarr.open_group(str(Path(plan.work) / "scratch.zarr"), mode="r")
    root = zarr.open_group(store, mode="r+")
    if what == "fragments":
        stitched = _table(_tables_path(plan, f"fragment_ids-{token}"))
        source = GlobalFragments(scratch["fragments"], blocks, offsets, stitched)
        targets = [("boundaries", scratch["boundaries"]), ("fragments", source)]
    elif what == "segmentation":
        segments = _table(_tables_path(plan, f"segment_ids-{token}"))
        source = GlobalFragments(scratch["fragments"], blocks, offsets, segments)
        targets = [("segmentation", source)]
    else:
        raise ValueError(f"what must be 'fragments' or 'segmentation'; got {what!r}")
    plane = int(np.prod([s.stop - s.start for s in region[1:]], dtype=np.int64))
    depth = max(chunk_depth, SLAB_VOXELS // max(plane, 1) // chunk_depth * chunk_depth)
    first = region[0]
    for z0 in range(first.start, first.stop, depth):
        part = (slice(z0, min(z0 + depth, first.stop)), *region[1:])
        for name, read in targets:
            array = root[name]
            array[part] = np.asarray(read[part]).astype(array.dtype, copy=False)
    return int(np.prod([s.stop - s.start for s in region], dtype=np.int64))


class StoreWriter:
    """The store of a blockwise run, written by tasks on a dask client.

    Parameters
    ----------
    client : distributed.Client
        Runs the region tasks.
    plan : BlockwisePlan
        The run.
    blocks : list of Block
        The grid.
    offsets, table : numpy.ndarray
        From :func:`~napari_connectome.blockwise_stitch.load_graph`.
    output : pathlib.Path
        The store to write (checked by the caller).
    attrs : dict
        Root attributes (``voxel_size`` and ``threshold`` required), as for
        :func:`~napari_connectome.io.write_segmentation_store`.
    retries : int
        Times a failed task is tried again.
    overwrite : bool
        Replace an existing output once the new store is complete.
    """

    def __init__(
        self, client, plan, blocks, offsets, table, output: Path, attrs, retries, overwrite
    ):
        import uuid

        import zarr

        from .io import _atomic
        from .io import segmentation_store as ss

        self.client, self.plan, self.blocks = client, plan, blocks
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.output, self.retries = Path(output), int(retries)
        self.overwrite, self.token = bool(overwrite), uuid.uuid4().hex[:8]
        shape = tuple(int(n) for n in plan.shape)
        if "threshold" not in attrs:
            raise ValueError("attrs must give the threshold of the written segmentation")
        self.attrs = ss.complete_store_attrs(attrs, shape)
        self.chunks = ss.store_chunks(shape, attrs["voxel_size"])
        self.regions = write_regions(shape, self.chunks, plan.block_size)
        self.table = np.asarray(table, dtype=np.uint64)
        np.save(_tables_path(plan, f"fragment_ids-{self.token}"), self.table)
        self.tmp = _atomic.temporary_sibling(self.output)
        self.root = zarr.open_group(str(self.tmp), mode="w-", zarr_format=2)
        common = {"axes": self.attrs["axes"], "voxel_size": self.attrs["voxel_size"]}
        self._create("boundaries", np.uint8, {**common, **ss.BOUNDARY_ATTRS})
        self._create("fragments", np.uint64, common)
        self.common = common
        self.pending: list = []

    def _create(self, name, dtype, attrs):
        from .io import segmentation_store as ss

        array = self.root.create_array(
            name,
            shape=tuple(self.plan.shape),
            dtype=dtype,
            chunks=self.chunks,
            compressors=ss._compressor(),
            fill_value=0,
        )
        array.attrs.update(attrs)

    def _submit(self, what: str):
        return [
            self.client.submit(
                write_region,
                self.plan,
                self.blocks,
                self.offsets,
                str(self.tmp),
                region,
                what,
                int(self.chunks[0]),
                self.token,
                retries=self.retries,
                pure=False,
                key=f"nc-write-{what}-{self.token}-{k}",
            )
            for k, region in enumerate(self.regions)
        ]

    def start_fragments(self) -> None:
        """Submit the boundaries and fragments tasks (returns at once)."""
        self.pending += self._submit("fragments")

    def finish(self, graph, tree, report) -> Path:
        """Write the segmentation, wait for every task, write the rest, move into place.

        Parameters
        ----------
        graph : RegionGraph
            The global region graph.
        tree : MergeTree
            Its merge order.
        report : callable
            ``report(fraction, message)``.

        Returns
        -------
        pathlib.Path
            The written store.
        """
        from .core.agglomeration import segment_table
        from .io import _atomic
        from .io import segmentation_store as ss

        threshold = self.attrs["threshold"]
        segments = segment_table(tree, tree.n_fragments, threshold)
        top = int(segments.max()) if segments.size else 0
        dtype = ss._segment_dtype(top)
        composed = segments.astype(dtype)[self.table.view(np.int64)]
        np.save(_tables_path(self.plan, f"segment_ids-{self.token}"), composed)
        self._create("segmentation", dtype, {**self.common, "threshold": threshold})
        self.pending += self._submit("segmentation")
        self._wait(report)
        ss.write_tables_and_attrs(self.root, graph, tree, self.attrs)
        _atomic.move_into_place(
            self.tmp, self.output, overwrite=self.overwrite, exists_error=ss.OutputExistsError
        )
        return self.output

    def _wait(self, report) -> None:
        """Wait for every task; a task's error (after its retries) is raised here."""
        from distributed import as_completed

        total = len(self.pending)
        for done, future in enumerate(as_completed(self.pending), start=1):
            future.result()
            report(done / total, f"writing {done}/{total}")

    def abort(self) -> None:
        """Cancel the tasks and remove the temporary store."""
        from .io import _atomic

        if self.pending:
            self.client.cancel([f for f in self.pending if not f.done()])
        _atomic.remove_path(self.tmp)
        for name in ("fragment_ids", "segment_ids"):
            _atomic.remove_path(_tables_path(self.plan, f"{name}-{self.token}"))
