"""Zarr (v2 and v3) and OME-Zarr (NGFF 0.4 and 0.5) volumes, read lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._common import (
    METADATA_NAMES,
    Found,
    VolumeError,
    as_voxel_size,
    corrupted,
    missing_array,
    nm_per_unit,
    pick_array,
    short_name,
    stem,
)

_NODE_FILES = (".zarray", ".zgroup", "zarr.json")
_GROUP_FILES = (".zgroup", "zarr.json")


def is_zarr_node(path: Path) -> bool:
    """Return True when ``path`` is a directory holding zarr metadata (or named ``*.zarr``)."""
    if not path.is_dir():
        return False
    if path.suffix.lower() == ".zarr":
        return True
    return any((path / f).is_file() for f in _NODE_FILES)


def zarr_root(path: Path) -> Path | None:
    """Return the topmost zarr node that ``path`` lies in (``path`` itself at least), or None."""
    if not is_zarr_node(path):
        return None
    root = path
    for parent in path.parents:
        if parent.suffix.lower() == ".zarr" and parent.is_dir():
            root = parent
        elif any((parent / f).is_file() for f in _GROUP_FILES):
            root = parent
        else:
            break
    return root


def _open(path: Path) -> Any:
    import zarr

    try:
        return zarr.open(store=str(path), mode="r")
    except Exception as exc:  # zarr raises many types for broken metadata
        raise corrupted(path, exc) from exc


def _is_array(node: Any) -> bool:
    return hasattr(node, "shape") and hasattr(node, "dtype")


def multiscale_meta(attrs: Any) -> dict | None:
    """Return the first ``multiscales`` entry of NGFF 0.4 or 0.5 attributes, or None."""
    try:
        ome = attrs.get("ome")
        entries = ome.get("multiscales") if isinstance(ome, dict) else None
        entries = entries or attrs.get("multiscales")
    except Exception:  # attributes that are not a mapping
        return None
    if isinstance(entries, list) and entries and isinstance(entries[0], dict):
        if entries[0].get("datasets"):
            return entries[0]
    return None


def _walk(group: Any, prefix: str, names: list[str]) -> None:
    meta = multiscale_meta(group.attrs)
    levels = set()
    if meta is not None:
        names.append(prefix.rstrip("/") or "/")
        levels = {str(d.get("path", "")).strip("/") for d in meta["datasets"]}
    for key in sorted(group.array_keys()):
        if key in levels or key in METADATA_NAMES:
            continue
        arr = group[key]
        if len(arr.shape) >= 2:
            names.append(prefix + key)
    for key in sorted(group.group_keys()):
        if key not in levels:
            _walk(group[key], prefix + key + "/", names)


def list_zarr(path: Path) -> list[str]:
    """List the arrays of a zarr store (a multiscale group counts as one array).

    The root itself is listed as ``"/"`` when it is a multiscale image; a store
    whose root is a plain array lists nothing.
    """
    root = _open(path)
    if _is_array(root):
        return []
    names: list[str] = []
    try:
        _walk(root, "", names)
    except Exception as exc:
        raise corrupted(path, exc) from exc
    return names


def _scale_of(transforms: Any) -> list[float] | None:
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale" and "scale" in t:
            return [float(v) for v in t["scale"]]
    return None


def _multiscale_voxel_size(meta: dict, ndim: int) -> tuple[tuple | None, list, list]:
    """Return (voxel size in nm with None for non-spatial axes, axis names, spatial flags)."""
    raw_axes = meta.get("axes") or ["t", "c", "z", "y", "x"][-ndim:]
    axes, spatial, units = [], [], []
    for ax in raw_axes:
        if isinstance(ax, dict):
            name = str(ax.get("name", ""))
            kind = ax.get("type")
            axes.append(name)
            spatial.append(kind == "space" if kind else name.lower() in ("z", "y", "x"))
            units.append(ax.get("unit"))
        else:
            axes.append(str(ax))
            spatial.append(str(ax).lower() in ("z", "y", "x"))
            units.append(None)
    if len(axes) != ndim:
        return None, [f"dim_{i}" for i in range(ndim)], [True] * ndim
    scale = _scale_of(meta["datasets"][0].get("coordinateTransformations"))
    outer = _scale_of(meta.get("coordinateTransformations"))
    if scale is None or len(scale) != ndim:
        return None, axes, spatial
    if outer is not None and len(outer) == ndim:
        scale = [a * b for a, b in zip(scale, outer, strict=True)]
    space_units = [u for u, s in zip(units, spatial, strict=True) if s]
    if all(u is None for u in space_units):
        # No units: take the numbers as nm, unless they are the identity.
        space_scale = [v for v, s in zip(scale, spatial, strict=True) if s]
        if all(v == 1.0 for v in space_scale):
            return None, axes, spatial
        factors = [1.0] * ndim
    else:
        factors = [nm_per_unit(u) if s else 1.0 for u, s in zip(units, spatial, strict=True)]
        if any(f is None for f in factors):
            return None, axes, spatial
    size = tuple(
        (v * f if s and v > 0 else None) for v, f, s in zip(scale, factors, spatial, strict=True)
    )
    if any(v is None for v, s in zip(size, spatial, strict=True) if s):
        return None, axes, spatial
    return size, axes, spatial


def open_zarr(path: Path, array: str | None) -> Found:
    """Open a zarr array or (OME-Zarr) multiscale group lazily.

    Parameters
    ----------
    path : Path
        The root of the store.
    array : str or None
        The array or multiscale group inside the store; None picks a default.

    Returns
    -------
    Found
        Zarr arrays (not loaded), finest level first.
    """
    root = _open(path)
    key = (array or "").strip("/")
    if not key and not _is_array(root) and multiscale_meta(root.attrs) is None:
        key = pick_array(list_zarr(path), path).strip("/")
    if key:
        if _is_array(root):
            raise VolumeError(f"{path} is a single zarr array; it holds no array {array!r}.")
        try:
            node = root[key]
        except KeyError:
            raise missing_array(path, array or key, list_zarr(path)) from None
        except Exception as exc:
            raise corrupted(f"{path}/{key}", exc) from exc
    else:
        node = root
    source = f"{path}:{key}" if key else str(path)
    name = short_name(key, stem(path))

    if _is_array(node):
        size = None
        for attrs in (node.attrs, root.attrs):
            for attr in ("voxel_size", "resolution"):
                if size is None and attr in attrs:
                    size = as_voxel_size(attrs[attr], len(node.shape))
        return Found(levels=[node], voxel_size=size, name=name, source=source)

    meta = multiscale_meta(node.attrs)
    if meta is None:
        inside = [n for n in list_zarr(path) if n.startswith(key + "/")]
        raise VolumeError(
            f"{source} is a zarr group, not an array or OME-Zarr image; "
            f"name an array inside it. Available arrays: {', '.join(inside) or 'none'}."
        )
    try:
        levels = [node[str(d["path"]).strip("/")] for d in meta["datasets"]]
    except Exception as exc:
        raise corrupted(source, exc) from exc
    size, axes, spatial = _multiscale_voxel_size(meta, len(levels[0].shape))
    return Found(
        levels=levels, voxel_size=size, name=name, source=source, axes=axes, spatial=spatial
    )
