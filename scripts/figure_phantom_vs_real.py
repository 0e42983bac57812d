"""Compare the EM phantom with real EM, side by side, and print intensity statistics.

Row 1: one xy section of an anisotropic phantom (256 x 256 at 4 nm, serial-section
TEM like) next to an equally sized crop of the ISBI 2012 volume (ssTEM, 4 nm
pixels). Rows 2 and 3: an isotropic phantom at the FIB-SEM data's voxel size
(xy, then xz) next to the gala FIB-SEM crop (10 nm isotropic).

The real volumes stay outside the repository; their paths are arguments.

Usage::

    python scripts/figure_phantom_vs_real.py [--isbi PATH] [--fib PATH] [--out PNG]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_connectome.synthetic import make_phantom  # noqa: E402

PANEL = 512  # width of each panel in the figure (pixels)


def _stats(name: str, raw: np.ndarray) -> dict:
    """Grey-level statistics that matter for realism."""
    r = raw.astype(np.float32)
    hist = np.histogram(raw, bins=8, range=(0, 256))[0] / raw.size
    a = r - r.mean(axis=(-2, -1), keepdims=True)
    lag1 = float((a[..., 1:] * a[..., :-1]).mean() / (a * a).mean())
    lag4 = float((a[..., 4:] * a[..., :-4]).mean() / (a * a).mean())
    out = {
        "name": name,
        "mean": float(r.mean()),
        "std": float(r.std()),
        "p5": float(np.percentile(r, 5)),
        "p50": float(np.percentile(r, 50)),
        "p95": float(np.percentile(r, 95)),
        "autocorr_lag1": lag1,
        "autocorr_lag4": lag4,
        "hist8": np.round(100 * hist, 1).tolist(),
    }
    print(
        f"{name:28s} mean {out['mean']:6.1f} std {out['std']:5.1f} "
        f"p5/50/95 {out['p5']:5.0f} {out['p50']:5.0f} {out['p95']:5.0f} "
        f"ac1 {lag1:.2f} ac4 {lag4:.2f} hist% {out['hist8']}"
    )
    return out


def _panel(img: np.ndarray, label: str, width: int = PANEL) -> Image.Image:
    h, w = img.shape
    im = Image.fromarray(img).resize((width, max(1, round(h * width / w))), Image.NEAREST)
    im = im.convert("RGB")
    draw = ImageDraw.Draw(im)
    box = draw.textbbox((0, 0), label)
    draw.rectangle((4, 4, box[2] + 12, box[3] + 10), fill=(0, 0, 0))
    draw.text((8, 6), label, fill=(255, 255, 0))
    return im


def _row(left: Image.Image, right: Image.Image, gap: int = 6) -> Image.Image:
    h = max(left.height, right.height)
    out = Image.new("RGB", (left.width + right.width + gap, h), (255, 255, 255))
    out.paste(left, (0, 0))
    out.paste(right, (left.width + gap, 0))
    return out


def main(argv=None) -> int:
    """Make the figure and print the statistics."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = ROOT.parent / "shared" / "data"
    parser.add_argument("--isbi", type=Path, default=data / "isbi2012_cardona_3d.npz")
    parser.add_argument("--fib", type=Path, default=data / "gala_fib_train.npz")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "images" / "phantom_vs_real.png"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rows = []
    aniso = make_phantom((16, 256, 256), (40.0, 4.0, 4.0), seed=args.seed)
    z = aniso.raw.shape[0] // 2
    _stats("phantom ssTEM (40,4,4)", aniso.raw)
    left = _panel(aniso.raw[z], "phantom, ssTEM-like, 40x4x4 nm, xy 1.0 um")
    if args.isbi.exists():
        isbi = np.load(args.isbi)["raw"]
        _stats("ISBI 2012 ssTEM (50,4,4)", isbi)
        right = _panel(
            isbi[isbi.shape[0] // 2, :256, :256], "ISBI 2012 ssTEM, 50x4x4 nm, xy 1.0 um"
        )
    else:
        print(f"{args.isbi} not found: real panel left blank")
        right = _panel(np.full((256, 256), 255, np.uint8), "ISBI 2012: file not found")
    rows.append(_row(left, right))

    if args.fib.exists():
        fib = np.load(args.fib)["raw"]
        fib_shape, fib_vs = fib.shape, (10.0, 10.0, 10.0)
    else:
        print(f"{args.fib} not found: real panel left blank")
        fib, fib_shape, fib_vs = None, (50, 100, 200), (10.0, 10.0, 10.0)
    iso = make_phantom(fib_shape, fib_vs, seed=args.seed)
    _stats("phantom FIB-SEM (10,10,10)", iso.raw)
    if fib is not None:
        _stats("gala FIB-SEM (10,10,10)", fib)
    blank = np.full(fib_shape[1:], 255, np.uint8)
    for view, cut in (
        ("xy", lambda v: v[v.shape[0] // 2]),
        ("xz", lambda v: v[:, v.shape[1] // 2]),
    ):
        left = _panel(cut(iso.raw), f"phantom, FIB-SEM-like, 10 nm iso, {view}")
        right = _panel(
            cut(fib) if fib is not None else blank[: fib_shape[0] if view == "xz" else None],
            f"gala FIB-SEM, 10 nm iso, {view}",
        )
        rows.append(_row(left, right))

    width = max(r.width for r in rows)
    fig = Image.new("RGB", (width, sum(r.height for r in rows) + 6 * (len(rows) - 1)), "white")
    y = 0
    for r in rows:
        fig.paste(r, (0, y))
        y += r.height + 6
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.save(args.out, optimize=True)
    print(f"wrote {args.out} ({fig.width}x{fig.height})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
