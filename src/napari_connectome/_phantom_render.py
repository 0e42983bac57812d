"""Image formation for the EM phantom: contrast, texture, blur, drift, noise, artefacts.

Intensities are built in grey levels (0-255) as ``float32`` and converted to
``uint8`` at the end. Heavy steps work in place on the full volume.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ._phantom_geometry import smooth_field

# appearance per imaging modality (grey levels, before drift and noise)
STYLES = {
    # serial-section TEM: mid-grey cytoplasm, thin crisp membranes, strong grain
    "sstem": {
        "cytoplasm": 156.0,
        "membrane": 100.0,  # darkening at the membrane voxels
        "shoulders": (0.55, 0.25),  # darkening 2 and 3 voxels from the boundary
        "shoulder_reach_nm": 12.0,
        "grain": 30.0,  # white specimen grain before blur (std)
        "mottle": 20.0,  # mottled texture (std)
        "mottle_nm": 5.0,
        "mito_gain": 1.2,
        "synapse_gain": 1.0,
        "vesicle_lumen": 1.0,  # vesicle interiors lighter than the cytoplasm
        "speckle": 1.0,
        "drift": 1.0,  # section-to-section drift (scales the ``drift`` argument)
    },
    # FIB-SEM (inverted back-scatter): bright cytoplasm, heavy dark membranes
    "fibsem": {
        "cytoplasm": 186.0,
        "membrane": 135.0,
        "shoulders": (0.45,),
        "shoulder_reach_nm": 25.0,
        "grain": 40.0,
        "mottle": 22.0,
        "mottle_nm": 7.0,
        "mito_gain": 2.2,
        "synapse_gain": 1.2,
        "vesicle_lumen": 0.0,
        "speckle": 0.5,
        "drift": 0.4,
    },
}


def fine_axes(voxel_size) -> list:
    """Axes sampled finely enough for membranes to be resolved across them."""
    vs = np.asarray(voxel_size, float)
    return [a for a in range(3) if vs[a] <= 2.0 * vs.min()]


def boundaries(labels: np.ndarray, axes, distance: int = 1) -> np.ndarray:
    """Voxels whose label differs from the voxel ``distance`` away along any of ``axes``."""
    out = np.zeros(labels.shape, bool)
    for a in axes:
        n = labels.shape[a]
        if n <= distance:
            continue
        lo = tuple(slice(0, n - distance) if i == a else slice(None) for i in range(3))
        hi = tuple(slice(distance, n) if i == a else slice(None) for i in range(3))
        d = labels[lo] != labels[hi]
        out[lo] |= d
        out[hi] |= d
    return out


def base_image(labels, n_labels, membranes, voxel_size, rng, style) -> np.ndarray:
    """Cytoplasm, membranes and texture, before organelles and blur.

    Parameters
    ----------
    labels : numpy.ndarray
        Dense neuron ids.
    n_labels : int
        Largest neuron id.
    membranes : numpy.ndarray
        Membrane mask.
    voxel_size : tuple of float
        Voxel size in nm.
    rng : numpy.random.Generator
        Random generator.
    style : dict
        One of :data:`STYLES`.

    Returns
    -------
    numpy.ndarray
        ``float32`` image in grey levels.
    """
    shape, vs = labels.shape, np.asarray(voxel_size, float)
    membrane = style["membrane"]
    tone = rng.normal(style["cytoplasm"], 9.0, n_labels + 1).astype(np.float32)
    tone[rng.random(n_labels + 1) < 0.1] -= 25.0  # a few darker (glia-like) profiles
    img = tone[labels]
    low = smooth_field(shape, vs, (400.0, 250.0, 250.0), rng)
    img += 7.0 * low
    # mottled cytoplasm: blobs of 10-30 nm, made at half resolution where the
    # pixels are small (the PSF blur hides the upsampling)
    half = [a for a in fine_axes(vs) if vs[a] < 6.0]
    small = tuple((n + 1) // 2 if a in half else n for a, n in enumerate(shape))
    mottle = rng.standard_normal(small, dtype=np.float32)
    sig = [
        0.0 if vs[a] > 2.0 * vs.min() else style["mottle_nm"] / vs[a] / (2 if a in half else 1)
        for a in range(3)
    ]
    mottle = ndi.gaussian_filter(mottle, sig, truncate=2.5)
    mottle *= style["mottle"] / max(float(mottle.std()), 1e-6)
    for a in half:
        mottle = np.repeat(mottle, 2, axis=a)
    img += mottle[: shape[0], : shape[1], : shape[2]]
    del mottle
    # membranes: dark lines at the label boundaries; a softer shoulder where the
    # sampling is fine, and a grey smear where a boundary crosses between sections
    low *= 0.2 * membrane
    low += membrane
    np.subtract(img, low, out=img, where=membranes)
    del low
    fine = fine_axes(vs)
    reach = 1
    for strength in style["shoulders"]:  # soft shoulders beside the boundary
        reach += 1
        if reach * vs[fine].min() > style["shoulder_reach_nm"]:
            break
        shoulder = boundaries(labels, fine, reach) & ~membranes
        np.subtract(img, strength * membrane, out=img, where=shoulder)
    coarse = [a for a in range(3) if a not in fine]
    if coarse:
        smear = boundaries(labels, coarse, 1) & ~membranes
        np.subtract(img, 0.22 * membrane, out=img, where=smear)
    return img


def _vesicle_profile(lumen_gain: float):
    def profile(rho: np.ndarray) -> np.ndarray:
        r = 19.0
        rim = np.exp(-0.5 * ((rho - r) / 3.0) ** 2)
        lumen = 1.0 / (1.0 + np.exp((rho - (r - 4.0)) / 1.5))
        return -120.0 * rim + 18.0 * lumen_gain * lumen

    return profile


def stamp(img, centres_nm, voxel_size, profile, reach_nm, amplitude=None, n_phase=4):
    """Add a radial profile around each centre, averaged over the section thickness.

    Parameters
    ----------
    img : numpy.ndarray
        ``float32`` image, changed in place.
    centres_nm : numpy.ndarray
        ``(n, 3)`` centres in nm.
    voxel_size : tuple of float
        Voxel size in nm.
    profile : callable
        Intensity change as a function of the distance (nm) to the centre.
    reach_nm : float
        Distance beyond which the profile is negligible.
    amplitude : numpy.ndarray, optional
        Per-centre scale of the profile.
    n_phase : int
        Number of sub-voxel z positions for which kernels are precomputed.
    """
    if len(centres_nm) == 0:
        return
    vs = np.asarray(voxel_size, float)
    shape = np.asarray(img.shape)
    k = np.ceil(reach_nm / vs).astype(int)
    grid = np.mgrid[tuple(slice(-a, a + 1) for a in k)].reshape(3, -1).T
    pos = np.asarray(centres_nm) / vs - 0.5  # continuous voxel coordinates
    base = np.rint(pos).astype(int)
    frac_z = pos[:, 0] - base[:, 0]  # in [-0.5, 0.5]
    phase = np.clip(((frac_z + 0.5) * n_phase).astype(int), 0, n_phase - 1)
    n_sub = max(1, int(np.ceil(vs[0] / 1.5)))
    sub = (np.arange(n_sub) + 0.5) / n_sub - 0.5  # sampling across the section (voxels)
    amp = np.ones(len(pos)) if amplitude is None else np.asarray(amplitude, float)
    flat = img.reshape(-1)
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    for ph in range(n_phase):
        sel = phase == ph
        if not np.any(sel):
            continue
        fz = (ph + 0.5) / n_phase - 0.5
        dz = (grid[:, 0][:, None] + sub[None] - fz) * vs[0]
        rho = np.sqrt(dz**2 + ((grid[:, 1] * vs[1]) ** 2 + (grid[:, 2] * vs[2]) ** 2)[:, None])
        kern = profile(rho).mean(axis=1)
        nz = np.abs(kern) > 1e-3 * np.abs(kern).max()
        g, kern = grid[nz], kern[nz]
        b, a_sel = base[sel], amp[sel]
        vals = (a_sel[:, None] * kern[None]).astype(np.float32)
        lo, hi = g.min(axis=0), g.max(axis=0)
        inner = np.all((b + lo >= 0) & (b + hi < shape), axis=1)
        # plain fancy-index addition: where two footprints overlap one of them
        # is dropped for that voxel, which is invisible and much faster than add.at
        flat[(b[inner] @ strides)[:, None] + (g @ strides)[None]] += vals[inner]
        idx = b[~inner][:, None] + g[None]
        ok = np.all((idx >= 0) & (idx < shape), axis=-1)
        flat[idx[ok] @ strides] += vals[~inner][ok]


def add_speckle(img, membranes, voxel_size, rng, style, per_um3=2500.0):
    """Sparse dark impulses in the cytoplasm; the PSF blur turns them into fine speckle."""
    vs = np.asarray(voxel_size, float)
    n = int(per_um3 * img.size * float(np.prod(vs)) / 1e9)
    if n == 0:
        return
    idx = rng.integers(0, img.size, n)
    idx = idx[~membranes.reshape(-1)[idx]]
    flat = img.reshape(-1)
    flat[idx] -= style["speckle"] * rng.uniform(40.0, 110.0, idx.size).astype(np.float32)


def add_vesicles(img, centres_nm, voxel_size, rng, style):
    """Synaptic vesicles: ~40 nm light-centred, dark-rimmed spheres."""
    amp = rng.uniform(0.75, 1.15, len(centres_nm))
    stamp(img, centres_nm, voxel_size, _vesicle_profile(style["vesicle_lumen"]), 28.0, amp)


def blur(img, sigma_nm, voxel_size, rng=None) -> np.ndarray:
    """Separable Gaussian PSF blur (sigma in nm per axis).

    With ``rng``, the in-plane sigma of each section varies (focus changes
    from section to section, as in serial-section TEM).
    """
    vs = np.asarray(voxel_size, float)
    s = np.asarray(sigma_nm, float) / vs
    if s[0] > 0.05 and img.shape[0] > 1:
        img = ndi.gaussian_filter1d(img, s[0], axis=0, mode="nearest", truncate=3.0)
    if rng is None or s[0] > 0.05:
        for a in (1, 2):
            if s[a] > 0.05:
                img = ndi.gaussian_filter1d(img, s[a], axis=a, mode="nearest", truncate=3.0)
        return img
    focus = rng.uniform(0.75, 1.3, img.shape[0])
    for z in range(img.shape[0]):
        ss = (0.0, *(s[1:] * focus[z]))
        if max(ss) > 0.05:
            img[z] = ndi.gaussian_filter(img[z], ss[1:], mode="nearest", truncate=3.0)
    return img


def drift(img, voxel_size, rng, strength) -> None:
    """Per-section brightness/contrast drift and slow lateral gradients, in place."""
    if strength <= 0:
        return
    nz, ny, nx = img.shape
    walk = np.cumsum(rng.standard_normal((nz, 2)), axis=0) * np.sqrt(1.0 / max(nz, 1))
    jitter = rng.standard_normal((nz, 2))
    offset = strength * (6.0 * walk[:, 0] + 3.0 * jitter[:, 0])
    gain = 1.0 + strength * (0.05 * walk[:, 1] + 0.03 * jitter[:, 1])
    mean = 125.0
    img -= mean
    img *= gain.astype(np.float32)[:, None, None]
    img += (mean + offset).astype(np.float32)[:, None, None]
    # lateral gradients: a tilted plane and a smooth bump, slowly changing with z
    t = np.linspace(0, 1, nz)[:, None]
    coef = strength * 8.0 * (rng.standard_normal((1, 2)) + 0.5 * t * rng.standard_normal((1, 2)))
    yy = np.linspace(-1, 1, ny, dtype=np.float32)
    xx = np.linspace(-1, 1, nx, dtype=np.float32)
    img += coef[:, 0].astype(np.float32)[:, None, None] * yy[None, :, None]
    img += coef[:, 1].astype(np.float32)[:, None, None] * xx[None, None, :]
    lateral = smooth_field((1, ny, nx), (1.0, *voxel_size[1:]), 1500.0, rng)[0]
    img += (strength * 6.0 * lateral)[None]


def add_noise(img, level, rng, grain: float) -> None:
    """Add specimen grain and Poisson-Gaussian acquisition noise, in place.

    Both are white before the PSF blur; one Gaussian draw carries both, with
    per-voxel standard deviation ``sqrt(grain**2 + noise(I)**2)`` where the
    acquisition noise has standard deviation ``level * 255`` at mid grey and a
    variance growing with the intensity.
    """
    sd = np.clip(img, 1.0, 255.0)
    sd *= (level * 255.0) ** 2 * 0.6 / 128.0
    sd += (level * 255.0) ** 2 * 0.4 + grain**2
    np.sqrt(sd, out=sd)
    sd *= rng.standard_normal(img.shape, dtype=np.float32)
    img += sd


def to_uint8(img) -> np.ndarray:
    """Clip to 0-255 and round to ``uint8``."""
    np.clip(img, 0, 255, out=img)
    img += 0.5
    return img.astype(np.uint8)


def missing(raw, sections, fill, rng) -> None:
    """Blank the given sections: ``black`` (0) or ``noise`` (grey noise)."""
    for z in sections:
        if fill == "black":
            raw[z] = 0
        else:
            mean = float(raw.mean())
            raw[z] = np.clip(rng.normal(mean, 25.0, raw.shape[1:]), 0, 255).astype(np.uint8)


def shift_section(arrays, z, dy, dx) -> None:
    """Translate section ``z`` of every array by ``(dy, dx)``, repeating the edge."""
    ny, nx = arrays[0].shape[1:]
    iy = np.clip(np.arange(ny) - dy, 0, ny - 1)
    ix = np.clip(np.arange(nx) - dx, 0, nx - 1)
    for a in arrays:
        a[z] = a[z][iy][:, ix]
