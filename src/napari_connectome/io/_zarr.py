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
from .segmentation_store import STORE_FORMAT

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


def _transform_of(transforms: Any, kind: str) -> list[float] | None:
    """Return the values of the first ``kind`` (``scale``/``translation``) transform, or None."""
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == kind and kind in t:
            try:
                return [float(v) for v in t[kind]]
            except (TypeError, ValueError):
                return None
    return None


def _axes_of(meta: dict, ndim: int) -> tuple[list, list, list]:
    """Return the axis names, spatial flags and units of NGFF ``multiscales`` metadata."""
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
    return axes, spatial, units


def _level0_transform(meta: dict, ndim: int) -> tuple[list | None, list]:
    """Compose level 0's and the outer scale/translation: (scale, translation) per axis."""
    first = meta["datasets"][0].get("coordinateTransformations")
    scale = _transform_of(first, "scale")
    shift = _transform_of(first, "translation") or [0.0] * ndim
    outer = meta.get("coordinateTransformations")
    outer_scale = _transform_of(outer, "scale") or [1.0] * ndim
    outer_shift = _transform_of(outer, "translation") or [0.0] * ndim
    if scale is None or any(len(v) != ndim for v in (scale, shift, outer_scale, outer_shift)):
        return None, [0.0] * ndim
    scale = [a * b for a, b in zip(scale, outer_scale, strict=True)]
    shift = [t * s + u for t, s, u in zip(shift, outer_scale, outer_shift, strict=True)]
    return scale, shift


def _multiscale_geometry(meta: dict, ndim: int) -> tuple:
    """Return (voxel size, translation) in nm, axis names and spatial flags.

    Voxel size and translation hold None for non-spatial axes; both are None
    when the spatial scale is unknown (missing, unknown units, identity).
    """
    axes, spatial, units = _axes_of(meta, ndim)
    if len(axes) != ndim:
        return None, None, [f"dim_{i}" for i in range(ndim)], [True] * ndim
    scale, shift = _level0_transform(meta, ndim)
    if scale is None:
        return None, None, axes, spatial
    space_units = [u for u, s in zip(units, spatial, strict=True) if s]
    if all(u is None for u in space_units):
        # No units: take the numbers as nm, unless they are the identity.
        space_scale = [v for v, s in zip(scale, spatial, strict=True) if s]
        if all(v == 1.0 for v in space_scale):
            return None, None, axes, spatial
        factors = [1.0] * ndim
    else:
        factors = [nm_per_unit(u) if s else 1.0 for u, s in zip(units, spatial, strict=True)]
        if any(f is None for f in factors):
            return None, None, axes, spatial
    size = tuple(
        (v * f if s and v > 0 else None) for v, f, s in zip(scale, factors, spatial, strict=True)
    )
    if any(v is None for v, s in zip(size, spatial, strict=True) if s):
        return None, None, axes, spatial
    offset = tuple((t * f if s else None) for t, f, s in zip(shift, factors, spatial, strict=True))
    return size, offset, axes, spatial


def _marked_labels(attrs: Any) -> bool:
    """Tell whether NGFF attributes mark a label image (``image-label``, 0.4 or 0.5)."""
    try:
        ome = attrs.get("ome")
        return "image-label" in attrs or (isinstance(ome, dict) and "image-label" in ome)
    except Exception:  # attributes that are not a mapping
        return False


def _listed_label(root: Any, key: str) -> bool:
    """Tell whether ``key`` is an image listed in the ``labels`` attribute of its parent group."""
    parent, _, leaf = key.rpartition("/")
    if not parent:
        return False
    try:
        listed = root[parent].attrs.get("labels")
        return isinstance(listed, list) and leaf in listed
    except Exception:  # no such group, or attributes that are not a mapping
        return False


def _store_kind(root: Any, key: str) -> bool | None:
    """Say whether an array of a segmentation store holds ids (True), an image (False)."""
    try:
        is_store = root.attrs.get("format") == STORE_FORMAT
    except Exception:  # attributes that are not a mapping
        return None
    if not is_store:
        return None
    top = key.split("/", 1)[0]
    return {"boundaries": False, "fragments": True, "segmentation": True}.get(top)


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

    kind = _store_kind(root, key) if not _is_array(root) else None
    if _is_array(node):
        size = None
        for attrs in (node.attrs, root.attrs):
            for attr in ("voxel_size", "resolution"):
                if size is None and attr in attrs:
                    size = as_voxel_size(attrs[attr], len(node.shape))
        if kind is None and _marked_labels(node.attrs):
            kind = True
        return Found(levels=[node], voxel_size=size, name=name, source=source, labels=kind)

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
    size, offset, axes, spatial = _multiscale_geometry(meta, len(levels[0].shape))
    if _marked_labels(node.attrs) or _listed_label(root, key):
        kind = True
    return Found(
        levels=levels,
        voxel_size=size,
        name=name,
        source=source,
        axes=axes,
        spatial=spatial,
        translate=offset,
        labels=kind,
    )
