"""Neurite geometry for the EM phantom: grown centre-lines, and smooth random fields.

Everything here works in physical units (nm, axis order z, y, x). Neurites are
grown all at once, one step per iteration for every active walker, steering
around the space that other neurites already occupy (a coarse occupancy grid),
so that they pack densely without passing through each other; holes left
empty are then filled by more neurites grown through them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

STEP_NM = 40.0  # centre-line step
OCCUPY = 0.8  # occupancy ball radius, fraction of the neurite radius
CORE = 0.6  # partition seed (core) radius, fraction of the neurite radius
MARGIN_NM = 250.0  # neurites start and end this far outside the volume
# radius classes (nm): thin axons, medium neurites, thick dendrites
CLASSES = ((0.8, 40.0, 85.0), (0.15, 90.0, 170.0), (0.05, 180.0, 350.0))


@dataclass
class Neurites:
    """Grown neurite centre-lines.

    Attributes
    ----------
    points : list of numpy.ndarray
        Per walker, ``(n, 3)`` centre-line points in nm.
    radii : list of numpy.ndarray
        Per walker, ``(n,)`` local radius in nm.
    neuron : numpy.ndarray
        Per walker, the neuron id (1-based; branches share their trunk's id).
    boutons : list of tuple
        ``(walker, point index, bouton radius)`` for each bouton swelling.
    """

    points: list = field(default_factory=list)
    radii: list = field(default_factory=list)
    neuron: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    boutons: list = field(default_factory=list)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _perpendicular(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = rng.standard_normal(d.shape)
    n -= np.sum(n * d, axis=-1, keepdims=True) * d
    return _unit(n)


def _ball_offsets(radius_cells: int) -> np.ndarray:
    r = int(radius_cells)
    g = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1].reshape(3, -1).T
    return g[np.sum(g * g, axis=1) <= r * r + r]


def _chord(p: np.ndarray, d: np.ndarray, extent: np.ndarray) -> float:
    """Length of the line through ``p`` along ``d`` inside the box [0, extent]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (0.0 - p) / d
        t2 = (extent - p) / d
    lo = np.nanmax(np.where(np.isfinite(t1), np.minimum(t1, t2), -np.inf))
    hi = np.nanmin(np.where(np.isfinite(t2), np.maximum(t1, t2), np.inf))
    return float(max(hi - lo, 0.0))


def _random_direction(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.6:  # within 45 degrees of the section normal
        cos_t = rng.uniform(np.cos(np.radians(45.0)), 1.0)
        phi = rng.uniform(0, 2 * np.pi)
        sin_t = np.sqrt(1 - cos_t**2)
        d = np.array([cos_t, sin_t * np.sin(phi), sin_t * np.cos(phi)])
        return d * (1 if rng.random() < 0.5 else -1)
    return _unit(rng.standard_normal(3))


def _sample_radius(rng: np.random.Generator, scale: float) -> float:
    u, acc = rng.random(), 0.0
    for p, lo, hi in CLASSES:
        acc += p
        if u <= acc:
            return float(rng.uniform(lo, hi) * scale)
    return float(CLASSES[-1][2] * scale)


def _interp_matrix(n: int, step: float, corr: float) -> np.ndarray:
    """Rows: unit-variance Gaussian weights from random nodes to ``n`` samples."""
    x = (np.arange(n) + 0.5) * step
    node_step = corr / 2.0
    m = int(np.ceil(n * step / node_step)) + 5
    nodes = (np.arange(m) - 2.0) * node_step
    w = np.exp(-0.5 * ((x[:, None] - nodes[None]) / (0.6 * corr)) ** 2)
    return (w / np.sqrt(np.sum(w * w, axis=1, keepdims=True))).astype(np.float32)


def smooth_field(shape, spacing, corr, rng: np.random.Generator) -> np.ndarray:
    """Smooth Gaussian random field with unit variance.

    Parameters
    ----------
    shape : tuple of int
        Output shape (z, y, x).
    spacing : tuple of float
        Sample spacing in nm per axis.
    corr : float or tuple of float
        Correlation length in nm (per axis, or one for all).
    rng : numpy.random.Generator
        Random generator.

    Returns
    -------
    numpy.ndarray
        ``float32`` field of the given shape.
    """
    corr = np.broadcast_to(np.asarray(corr, float), (3,))
    mz, my, mx = (_interp_matrix(n, s, c) for n, s, c in zip(shape, spacing, corr, strict=True))
    g = rng.standard_normal((mz.shape[1], my.shape[1], mx.shape[1]), dtype=np.float32)
    g = np.matmul(np.matmul(my, g), mx.T)
    return np.tensordot(mz, g, axes=(1, 0))


class _Walkers:
    """Struct-of-arrays state of all neurite walkers (trunks and branches)."""

    def __init__(self, capacity: int, max_steps: int):
        self.n = 0
        self.cap = capacity
        self.pos = np.zeros((capacity, 3))
        self.dir = np.zeros((capacity, 3))
        self.d0 = np.zeros((capacity, 3))
        self.rbase = np.zeros(capacity)
        self.r = np.zeros(capacity)
        self.ou = np.zeros(capacity)
        self.sigma = np.zeros(capacity)
        self.nid = np.zeros(capacity, np.int64)
        self.active = np.zeros(capacity, bool)
        self.steps = np.zeros(capacity, np.int64)
        self.max_steps = np.zeros(capacity, np.int64)
        self.depth = np.zeros(capacity, np.int64)
        self.bouton_k = np.full(capacity, -(10**9), np.int64)
        self.bouton_amp = np.ones(capacity)
        self.bouton_w = np.ones(capacity)
        self.bouton_rate = np.zeros(capacity)
        self.branch_rate = np.zeros(capacity)
        self.pts = np.zeros((capacity, max_steps + 1, 3))
        self.rad = np.zeros((capacity, max_steps + 1))

    def add(self, pos, d, r, nid, max_steps, depth, rng) -> int:
        if self.n >= self.cap:
            return -1
        i = self.n
        self.n += 1
        self.pos[i], self.dir[i], self.d0[i] = pos, d, d
        self.rbase[i] = self.r[i] = r
        self.nid[i], self.max_steps[i], self.depth[i] = nid, max_steps, depth
        lp = rng.uniform(1500.0, 4000.0) if r < 100 else rng.uniform(1200.0, 2500.0)
        self.sigma[i] = np.sqrt(2 * STEP_NM / lp)
        self.active[i] = True
        self.pts[i, 0], self.rad[i, 0] = pos, r
        thin = r < 100
        self.bouton_rate[i] = STEP_NM / rng.uniform(700.0, 1600.0) if thin else 0.0
        self.branch_rate[i] = STEP_NM / (rng.uniform(1500.0, 4000.0) if not thin else 6000.0)
        if depth > 0:
            self.branch_rate[i] *= 0.3
        return i


class _Occupancy:
    """Coarse grid of the neuron id occupying each cell (0 = free)."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray, cell: float):
        self.lo, self.cell = lo, cell
        self.shape = np.maximum(np.ceil((hi - lo) / cell).astype(int), 1)
        self.grid = np.zeros(tuple(self.shape), np.int32)
        self._balls = {}

    def cells(self, p: np.ndarray) -> np.ndarray:
        return np.floor((p - self.lo) / self.cell).astype(np.int64)

    def lookup(self, p: np.ndarray) -> np.ndarray:
        c = self.cells(p)
        inside = np.all((c >= 0) & (c < self.shape), axis=-1)
        out = np.zeros(c.shape[:-1], np.int32)
        ci = c[inside]
        out[inside] = self.grid[ci[:, 0], ci[:, 1], ci[:, 2]]
        return out

    def mark(self, p: np.ndarray, radius: np.ndarray, ids: np.ndarray) -> None:
        rc = np.round(radius / self.cell).astype(int)
        c = self.cells(p)
        for value in np.unique(rc):
            sel = rc == value
            if value not in self._balls:
                self._balls[value] = _ball_offsets(value)
            idx = c[sel][:, None, :] + self._balls[value][None]
            lab = np.broadcast_to(ids[sel][:, None], idx.shape[:2])
            ok = np.all((idx >= 0) & (idx < self.shape), axis=-1)
            idx = idx[ok]
            self.grid[idx[:, 0], idx[:, 1], idx[:, 2]] = lab[ok]


def _grow(walkers: _Walkers, occ: _Occupancy, lo, hi, rng, neurites: Neurites) -> None:
    """Advance every active walker until all have left the volume or ended."""
    n_cand = 6
    spread = np.array([1.0, 2.0, 3.2, 4.5, 6.0, 8.0])
    while True:
        act = np.flatnonzero(walkers.active[: walkers.n])
        if act.size == 0:
            return
        d, p = walkers.dir[act], walkers.pos[act]
        r = walkers.r[act]
        nid = walkers.nid[act]
        # candidate directions with increasing deviation from a persistent walk
        noise = rng.standard_normal((act.size, n_cand, 3))
        noise -= np.sum(noise * d[:, None], axis=-1, keepdims=True) * d[:, None]
        sig = np.minimum(walkers.sigma[act][:, None] * spread[None], 1.3)
        cand = _unit(d[:, None] + sig[..., None] * noise + 0.04 * walkers.d0[act][:, None])
        q = p[:, None] + STEP_NM * cand
        e1 = _perpendicular(cand, rng)
        e2 = np.cross(cand, e1)
        rho = (OCCUPY * r + 0.5 * occ.cell)[:, None, None, None]
        probes = q[:, :, None] + rho * np.stack([cand, e1, -e1, e2, -e2], axis=2)
        probes = np.concatenate([q[:, :, None], probes], axis=2)
        hit = occ.lookup(probes)
        hits = np.sum((hit != 0) & (hit != nid[:, None, None]), axis=2)
        best = np.argmin(hits * 10 + np.arange(n_cand)[None], axis=1)
        rows = np.arange(act.size)
        new_d = cand[rows, best]
        new_p = q[rows, best]
        walkers.dir[act], walkers.pos[act] = new_d, new_p
        walkers.steps[act] += 1
        k = walkers.steps[act]
        # radius: slow log-normal wobble, bouton swellings, tapering branch tips
        walkers.ou[act] = 0.93 * walkers.ou[act] + 0.37 * rng.standard_normal(act.size)
        start = (rng.random(act.size) < walkers.bouton_rate[act]) & (k > walkers.bouton_k[act] + 8)
        if np.any(start):
            s = act[start]
            rb = rng.uniform(130.0, 240.0, s.size)
            walkers.bouton_amp[s] = np.maximum(rb / walkers.rbase[s], 1.5)
            walkers.bouton_w[s] = rng.uniform(0.45, 0.7, s.size) * rb
            walkers.bouton_k[s] = walkers.steps[s] + np.ceil(
                2.0 * walkers.bouton_w[s] / STEP_NM
            ).astype(np.int64)
        dk = (k - walkers.bouton_k[act]) * STEP_NM
        bump = 1 + (walkers.bouton_amp[act] - 1) * np.exp(-0.5 * (dk / walkers.bouton_w[act]) ** 2)
        frac = k / np.maximum(walkers.max_steps[act], 1)
        taper = np.where(walkers.depth[act] > 0, np.clip(1.6 - frac, 0.45, 1.0), 1.0)
        r_new = walkers.rbase[act] * np.exp(0.12 * walkers.ou[act]) * bump * taper
        walkers.r[act] = r_new
        walkers.pts[act, k] = new_p
        walkers.rad[act, k] = r_new
        occ.mark(new_p, OCCUPY * r_new, nid.astype(np.int32))
        for i in act[k == walkers.bouton_k[act]]:
            neurites.boutons.append((int(i), int(walkers.steps[i]), float(walkers.r[i])))
        # branches
        inside = np.all((new_p > lo + MARGIN_NM) & (new_p < hi - MARGIN_NM), axis=1)
        spawn = act[(rng.random(act.size) < walkers.branch_rate[act]) & inside]
        for i in spawn:
            if walkers.depth[i] >= 2:
                continue
            u = _perpendicular(walkers.dir[i][None], rng)[0]
            a = np.radians(rng.uniform(35.0, 80.0))
            bd = np.cos(a) * walkers.dir[i] + np.sin(a) * u
            br = max(45.0, walkers.rbase[i] * rng.uniform(0.4, 0.7))
            length = rng.uniform(500.0, 2500.0)
            walkers.add(
                walkers.pos[i],
                bd,
                br,
                walkers.nid[i],
                int(length / STEP_NM),
                walkers.depth[i] + 1,
                rng,
            )
        # termination: left the padded volume, or reached the length limit
        out = np.any((new_p < lo) | (new_p > hi), axis=1)
        done = out | (k >= walkers.max_steps[act])
        walkers.active[act[done]] = False


def _holes(occ: _Occupancy, extent: np.ndarray, threshold: float) -> list:
    """Centres (nm) and clearance of empty regions in the volume, largest first."""
    dist = ndi.distance_transform_edt(occ.grid == 0, sampling=occ.cell)
    c0 = np.maximum(occ.cells(np.zeros(3)), 0)
    c1 = np.minimum(occ.cells(extent) + 1, occ.shape)
    sub = dist[c0[0] : c1[0], c0[1] : c1[1], c0[2] : c1[2]].copy()
    out = []
    while True:
        j = np.unravel_index(np.argmax(sub), sub.shape)
        clearance = sub[j]
        if clearance < threshold or len(out) > 400:
            return out
        centre = occ.lo + (np.array(j) + c0 + 0.5) * occ.cell
        out.append((centre, float(clearance)))
        rad = int(np.ceil(1.6 * clearance / occ.cell))
        s = tuple(slice(max(a - rad, 0), a + rad + 1) for a in j)
        sub[s] = 0


def grow_neurites(extent, rng: np.random.Generator, scale: float = 1.0) -> Neurites:
    """Grow densely packed, branching neurites through a box.

    Parameters
    ----------
    extent : array-like of 3 float
        Physical size of the volume in nm (z, y, x).
    rng : numpy.random.Generator
        Random generator (determinism comes from it).
    scale : float
        Multiplies all neurite radii.

    Returns
    -------
    Neurites
        Centre-lines, radii, neuron ids and bouton positions.
    """
    extent = np.asarray(extent, float)
    lo, hi = -np.full(3, MARGIN_NM), extent + MARGIN_NM
    volume = float(np.prod(extent))
    max_r = max(45.0, 0.4 * float(np.sort(extent)[1]))
    cell = max(30.0, (volume / 3e6) ** (1 / 3))
    occ = _Occupancy(lo, hi, cell)
    diag = float(np.linalg.norm(hi - lo))
    max_steps = int(1.6 * diag / STEP_NM) + 4
    # trunks: random points and directions until their expected volume fills the box
    seeds, budget = [], 0.0
    while budget < 1.1 * volume or len(seeds) < 3:
        r = min(_sample_radius(rng, scale), max_r)
        p = rng.uniform(0, 1, 3) * extent
        d = _random_direction(rng)
        seeds.append((p, d, r))
        budget += np.pi * r * r * max(_chord(p, d, extent), 2 * r) * 1.25
        if len(seeds) > 20000:
            break
    seeds.sort(key=lambda s: -s[2])
    cap = 10 * len(seeds) + 64
    walkers = _Walkers(cap, max_steps)
    neurites = Neurites()
    nid = 0
    for p, d, r in seeds:
        nid += 1
        walkers.add(p, d, r, nid, max_steps, 0, rng)
        walkers.add(p, -d, r, nid, max_steps, 0, rng)
    occ.mark(walkers.pos[: walkers.n], OCCUPY * walkers.r[: walkers.n], walkers.nid[: walkers.n])
    _grow(walkers, occ, lo, hi, rng, neurites)
    # fill what is left empty with neurites through the holes
    for _ in range(2):
        holes = _holes(occ, extent, threshold=95.0 * scale)
        if not holes:
            break
        first = walkers.n
        for centre, clearance in holes:
            nid += 1
            r = float(np.clip(0.7 * clearance, 50.0 * scale, min(300.0 * scale, max_r)))
            d = _random_direction(rng)
            walkers.add(centre, d, r, nid, max_steps, 0, rng)
            walkers.add(centre, -d, r, nid, max_steps, 0, rng)
        sl = slice(first, walkers.n)
        occ.mark(walkers.pos[sl], OCCUPY * walkers.r[sl], walkers.nid[sl])
        _grow(walkers, occ, lo, hi, rng, neurites)
    for i in range(walkers.n):
        n = walkers.steps[i] + 1
        neurites.points.append(walkers.pts[i, :n].copy())
        neurites.radii.append(walkers.rad[i, :n].copy())
    neurites.neuron = walkers.nid[: walkers.n].copy()
    return neurites
