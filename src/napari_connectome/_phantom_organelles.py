"""Organelles of the EM phantom: mitochondria, synapses and vesicle clouds.

Each function writes its exact truth into an id volume and its appearance as
an intensity change into the (pre-blur) image, working only inside small
boxes around each object so that the cost does not grow with the volume.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

SYNAPSE_DTYPE = np.dtype(
    [
        ("id", np.uint32),
        ("z", np.float64),
        ("y", np.float64),
        ("x", np.float64),
        ("pre", np.uint32),
        ("post", np.uint32),
    ]
)
VESICLE_RADIUS_NM = 19.0


def _box(lo_nm, hi_nm, voxel_size, shape):
    """Voxel slices covering the physical box [lo, hi] (clipped), or None."""
    vs = np.asarray(voxel_size)
    a = np.maximum(np.floor(np.asarray(lo_nm) / vs - 0.5).astype(int), 0)
    b = np.minimum(np.ceil(np.asarray(hi_nm) / vs + 0.5).astype(int), shape)
    if np.any(b <= a):
        return None
    return tuple(slice(int(i), int(j)) for i, j in zip(a, b, strict=True))


def _coords_nm(box, voxel_size):
    """Physical coordinates (nm) of the voxel centres of a box, per axis, broadcastable."""
    out = []
    for a, s in enumerate(box):
        c = (np.arange(s.start, s.stop) + 0.5) * voxel_size[a]
        out.append(c.reshape([-1 if i == a else 1 for i in range(3)]).astype(np.float32))
    return out


def _segment_distance(box, voxel_size, p0, p1):
    """Distance (nm) from box voxels to segment p0-p1, and the position along it."""
    z, y, x = _coords_nm(box, voxel_size)
    d = p1 - p0
    length2 = max(float(d @ d), 1e-9)
    t = ((z - p0[0]) * d[0] + (y - p0[1]) * d[1] + (x - p0[2]) * d[2]) / length2
    t = np.clip(t, 0.0, 1.0)
    dist2 = (z - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (x - p0[2] - t * d[2]) ** 2
    return np.sqrt(dist2), t * np.sqrt(length2)


def _erode_inplane(mask: np.ndarray) -> np.ndarray:
    """Erode a mask by one voxel along y and x."""
    out = mask.copy()
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    out[:, :, 1:] &= mask[:, :, :-1]
    out[:, :, :-1] &= mask[:, :, 1:]
    return out


def add_mitochondria(img, labels, membranes, voxel_size, neurites, lut, rng, fraction, gain=1.0):
    """Place dark, cristae-textured mitochondria inside the thicker neurites.

    Parameters
    ----------
    img : numpy.ndarray
        ``float32`` image, changed in place.
    labels, membranes : numpy.ndarray
        Neuron ids and membrane mask.
    voxel_size : tuple of float
        Voxel size in nm.
    neurites : Neurites
        The grown neurites (centre-lines and radii).
    lut : numpy.ndarray
        Walker neuron id -> final label.
    rng : numpy.random.Generator
        Random generator.
    fraction : float
        Target volume fraction of mitochondria.
    gain : float
        Contrast of the mitochondria relative to the serial-section TEM look.

    Returns
    -------
    numpy.ndarray
        ``uint32`` mitochondrion ids (0 = none).
    """
    shape = labels.shape
    vs = np.asarray(voxel_size, float)
    mito = np.zeros(shape, np.uint32)
    extent = np.asarray(shape) * vs
    target = fraction * float(np.prod(extent))
    cand = [i for i, r in enumerate(neurites.radii) if len(r) > 3 and np.median(r) >= 75.0]
    if not cand or target <= 0:
        return mito
    weight = np.array([len(neurites.radii[i]) * np.median(neurites.radii[i]) ** 2 for i in cand])
    weight /= weight.sum()
    volume, next_id, tries = 0.0, 1, 0
    voxel_volume = float(np.prod(vs))
    while volume < target and tries < 60 + int(4 * target / 5e6):
        tries += 1
        w = cand[rng.choice(len(cand), p=weight)]
        pts, rad = neurites.points[w], neurites.radii[w]
        inside = np.flatnonzero(np.all((pts > 0) & (pts < extent), axis=1))
        if inside.size < 2:
            continue
        i0 = int(rng.choice(inside))
        n = max(2, int(rng.uniform(250.0, 1200.0) / 40.0))
        i1 = min(i0 + n, len(pts) - 1)
        if i1 - i0 < 4:
            continue
        poly, rmin = pts[i0 : i1 + 1 : 2], float(rad[i0 : i1 + 1].min())
        rm = float(np.clip(rng.uniform(0.5, 0.8) * rmin, 35.0, 170.0))
        axis = poly[-1] - poly[0]
        off = np.cross(axis, rng.standard_normal(3))
        off *= rng.uniform(0.0, 0.3) * max(rmin - rm, 0.0) / max(np.linalg.norm(off), 1e-9)
        poly = poly + off
        box = _box(poly.min(0) - rm, poly.max(0) + rm, vs, shape)
        if box is None:
            continue
        owner = lut[neurites.neuron[w]]
        dist = np.full(tuple(s.stop - s.start for s in box), np.inf, np.float32)
        arc = np.zeros_like(dist)
        length = 0.0
        for a, b in zip(poly[:-1], poly[1:], strict=True):
            sub = _box(np.minimum(a, b) - rm, np.maximum(a, b) + rm, vs, shape)
            if sub is None:
                continue
            d, t = _segment_distance(sub, vs, a, b)
            loc = tuple(
                slice(s.start - o.start, s.stop - o.start) for s, o in zip(sub, box, strict=True)
            )
            better = d < dist[loc]
            dist[loc] = np.where(better, d, dist[loc])
            arc[loc] = np.where(better, t + length, arc[loc])
            length += float(np.linalg.norm(b - a))
        mask = _erode_inplane((labels[box] == owner) & ~membranes[box]) & (dist <= rm)
        if mask.sum() < 8 or np.any(mito[box][dist <= rm + 12.0]):
            continue
        mito[box][mask] = next_id
        next_id += 1
        volume += mask.sum() * voxel_volume
        # dark matrix, darker double-membrane rim, lamellar cristae across the long axis
        depth, along = rm - dist[mask], arc[mask]
        period, phase = rng.uniform(28.0, 45.0), rng.uniform(0, 2 * np.pi)
        period = max(period, 3.0 * float(vs[1:].min()))
        n = rng.standard_normal(3)
        n /= np.linalg.norm(n)
        z, y, x = (np.broadcast_to(c, dist.shape)[mask] for c in _coords_nm(box, vs))
        across = z * n[0] + y * n[1] + x * n[2]
        wave = 0.5 * along + across + 6.0 * np.sin(dist[mask] / 11.0)
        cristae = np.cos(2 * np.pi * wave / period + phase)
        rim = np.exp(-0.5 * ((depth - 4.0) / 3.5) ** 2)
        delta = gain * (-55.0 - 30.0 * rim) + 22.0 * cristae * (depth > 10.0)
        img[box][mask] += delta.astype(np.float32)
    return mito


def _contacts(lb, pre, axes):
    """Pre-side and partner-side voxel coordinates of contacts with other labels."""
    pre_c, post_c, post_l = [], [], []
    for a in axes:
        n = lb.shape[a]
        if n < 2:
            continue
        lo = tuple(slice(0, n - 1) if i == a else slice(None) for i in range(3))
        hi = tuple(slice(1, n) if i == a else slice(None) for i in range(3))
        step = np.eye(3, dtype=int)[a]
        for src, dst, sign in ((lo, hi, 1), (hi, lo, -1)):
            m = (lb[src] == pre) & (lb[dst] != pre)
            c = np.argwhere(m)
            if sign < 0:
                c = c + step
            pre_c.append(c)
            post_c.append(c + sign * step)
            post_l.append(lb[tuple((c + sign * step).T)])
    if not pre_c:
        return np.zeros((0, 3), int), np.zeros((0, 3), int), np.zeros(0, lb.dtype)
    return np.concatenate(pre_c), np.concatenate(post_c), np.concatenate(post_l)


def _vesicle_cloud(labels, pre, centre, radius, count, voxel_size, rng):
    """Up to ``count`` non-overlapping vesicle centres (nm) inside ``pre`` near ``centre``."""
    vs = np.asarray(voxel_size)
    cand = centre + rng.uniform(-1, 1, (6 * count, 3)) * radius
    cand = cand[np.sum((cand - centre) ** 2, axis=1) <= radius**2]
    room = VESICLE_RADIUS_NM + 6.0
    ok = np.ones(len(cand), bool)
    for off in ([0, 0, 0], [0, room, 0], [0, -room, 0], [0, 0, room], [0, 0, -room]):
        v = np.floor((cand + off) / vs).astype(int)
        inside = np.all((v >= 0) & (v < labels.shape), axis=1)
        ok &= inside
        vi = v[inside]
        ok[inside] &= labels[vi[:, 0], vi[:, 1], vi[:, 2]] == pre
    min_d2 = (2.1 * VESICLE_RADIUS_NM) ** 2
    chosen = []
    for c in cand[ok]:
        if not chosen or np.min(np.sum((np.array(chosen) - c) ** 2, axis=1)) >= min_d2:
            chosen.append(c)
            if len(chosen) >= count:
                break
    return chosen


def scatter_vesicles(labels, voxel_size, neurites, lut, rng, per_um=1.5):
    """Small vesicle clusters along thin axons (``per_um`` clusters per micrometre)."""
    vs = np.asarray(voxel_size, float)
    extent = np.asarray(labels.shape) * vs
    out = []
    for w, (pts, rad) in enumerate(zip(neurites.points, neurites.radii, strict=True)):
        if np.median(rad) >= 100.0:
            continue
        inside = np.flatnonzero(np.all((pts > 0) & (pts < extent), axis=1))
        n = rng.poisson(per_um * len(inside) * 0.04)
        for k in rng.choice(inside, min(n, len(inside)), replace=False) if n else ():
            count = int(rng.integers(2, 10))
            pre = lut[neurites.neuron[w]]
            out += _vesicle_cloud(labels, pre, pts[k], 0.8 * rad[k], count, vs, rng)
    return out


def add_synapses(img, labels, membranes, voxel_size, neurites, lut, rng, density, gain=1.0):
    """Make polyadic synapses at axon boutons: cleft, PSDs, T-bar and vesicle cloud.

    Parameters
    ----------
    img : numpy.ndarray
        ``float32`` image, changed in place.
    labels, membranes : numpy.ndarray
        Neuron ids and membrane mask.
    voxel_size : tuple of float
        Voxel size in nm.
    neurites : Neurites
        The grown neurites (with their bouton positions).
    lut : numpy.ndarray
        Walker neuron id -> final label.
    rng : numpy.random.Generator
        Random generator.
    density : float
        Presynaptic sites per cubic micrometre.
    gain : float
        Contrast of the densities relative to the serial-section TEM look.

    Returns
    -------
    synapses : numpy.ndarray
        ``uint32`` synapse ids (0 = none): the contact voxels of the cleft on both
        sides and the postsynaptic densities.
    table : numpy.ndarray
        One row per (synapse, postsynaptic partner), dtype ``SYNAPSE_DTYPE``.
    vesicles : numpy.ndarray
        ``(n, 3)`` vesicle centres in nm.
    """
    shape = labels.shape
    vs = np.asarray(voxel_size, float)
    extent = np.asarray(shape) * vs
    syn = np.zeros(shape, np.uint32)
    rows, vesicles, centres = [], [], []
    target = int(rng.poisson(density * np.prod(extent) / 1e9))
    fine = [a for a in range(3) if vs[a] <= 2.0 * vs.min()]
    order = rng.permutation(len(neurites.boutons))
    sid = 0
    for j in order:
        w, k, rb = neurites.boutons[j]
        p = neurites.points[w][k]
        pre = lut[neurites.neuron[w]]
        v = np.floor(p / vs).astype(int)
        if np.any(v < 0) or np.any(v >= shape) or labels[tuple(v)] != pre:
            continue
        if sid >= target:  # boutons without a synapse still hold vesicles
            vesicles += _vesicle_cloud(
                labels, pre, p, 0.75 * rb, int(rng.integers(8, 35)), vs, rng
            )
            continue
        if any(np.sum((p - c) ** 2) < 450.0**2 for c in centres):
            continue
        box = _box(p - rb - 60.0, p + rb + 60.0, vs, shape)
        pre_c, post_c, post_l = _contacts(labels[box], pre, fine)
        if len(post_c) < 4:
            continue
        origin = np.array([s.start for s in box])
        post_nm = (post_c + origin + 0.5) * vs
        radius = rng.uniform(90.0, 170.0)
        probe = rng.choice(len(post_c), min(48, len(post_c)), replace=False)
        d2 = np.sum((post_nm[probe][:, None] - post_nm[None]) ** 2, axis=2)
        n_distinct = [len(np.unique(post_l[m])) for m in d2 <= radius**2]
        best = probe[int(np.argmax(np.array(n_distinct) + rng.random(len(probe))))]
        c = post_nm[best]
        disc = np.sum((post_nm - c) ** 2, axis=1) <= radius**2
        labs, counts = np.unique(post_l[disc], return_counts=True)
        n_post = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.35, 0.3, 0.15]))
        keep = counts >= max(3, 0.15 * counts.max())
        posts = labs[keep][np.argsort(-counts[keep])][:n_post]
        sel = disc & np.isin(post_l, posts)
        if not np.any(sel):
            continue
        # the cleft, its PSDs and the T-bar, in a box around the cleft centre
        box = _box(c - radius - 60.0, c + radius + 60.0, vs, shape)
        shift = origin - np.array([s.start for s in box])
        lb = labels[box]
        contact = np.zeros(lb.shape, bool)
        contact[tuple((post_c[sel] + shift).T)] = True
        post_side = contact.copy()
        contact[tuple((pre_c[sel] + shift).T)] = True
        sz = np.zeros((3, 3, 3), bool)
        sz[1] = ndi.generate_binary_structure(2, 1)
        if 0 in fine:
            sz = ndi.generate_binary_structure(3, 1)
        k_psd = max(1, int(round(28.0 / vs[1:].min())))
        z, y, x = _coords_nm(box, vs)
        in_disc = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= (radius + 15.0) ** 2
        psd = ndi.binary_dilation(post_side, sz, iterations=k_psd) & np.isin(lb, posts) & in_disc
        region = contact | psd
        if np.any(syn[box][region]):
            continue
        sid += 1
        syn[box][region] = sid
        centres.append(p)
        cz, cy, cx = (np.argwhere(region) + [s.start for s in box]).mean(axis=0)
        rows += [(sid, cz, cy, cx, pre, q) for q in posts]
        # appearance: darker cleft membranes, PSD, T-bar density and vesicle cloud
        sub = img[box]
        sub[contact] -= 40.0 * gain
        sub[psd & ~contact] -= 55.0 * gain
        inward = p - c
        inward /= max(np.linalg.norm(inward), 1e-9)
        t = c + 32.0 * inward
        blob = np.exp(-((z - t[0]) ** 2 + (y - t[1]) ** 2 + (x - t[2]) ** 2) / (2 * 24.0**2))
        tbar = (lb == pre) & (blob > 0.05)
        sub[tbar] -= 100.0 * gain * blob[tbar]
        cloud_c = c + min(0.65 * rb, 140.0) * inward
        vesicles += _vesicle_cloud(
            labels, pre, cloud_c, 0.85 * rb, int(rng.integers(25, 60)), vs, rng
        )
    table = np.array(rows, dtype=SYNAPSE_DTYPE) if rows else np.zeros(0, SYNAPSE_DTYPE)
    ves = np.array(vesicles, float).reshape(-1, 3)
    return syn, table, ves
