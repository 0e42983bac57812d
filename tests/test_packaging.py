"""The plugin installs the way napari users install plugins.

`npe2 validate napari-connectome` passes from the editable install and from a
wheel built from this tree; the wheel carries the manifest and the sample.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, **kwargs)


def test_manifest_at_root_is_the_packaged_one():
    packaged = ROOT / "src" / "napari_connectome" / "napari.yaml"
    assert (ROOT / "napari.yaml").read_text() == packaged.read_text()


def test_npe2_validate_editable_install():
    result = _run([sys.executable, "-m", "npe2", "validate", "napari-connectome"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    # Build from a clean copy of the tree: a local build/ folder must not leak old files.
    source = tmp_path_factory.mktemp("source") / "tree"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    result = _run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation"]
        + ["-w", str(out), "-q"]
    )
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("napari_connectome-*.whl")
    return path


def test_wheel_carries_manifest_and_sample(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "napari_connectome/napari.yaml" in names
    assert "napari_connectome/sample_data/phantom_sample.npz" in names


def test_npe2_validate_and_sample_from_the_wheel(wheel, tmp_path):
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    # -S: skip site processing, so the editable install's finder is not loaded and
    # the wheel's copy (first on the path) is the napari-connectome that npe2 sees.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), site_packages]))
    code = (
        "import sys, napari_connectome\n"
        f"assert napari_connectome.__file__.startswith({str(target)!r})\n"
        "from napari_connectome._sample_data import load_sample_phantom\n"
        "layers = load_sample_phantom()\n"
        "assert [t for _, _, t in layers] == ['image', 'labels', 'labels']\n"
        "sys.argv = ['npe2', 'validate', 'napari-connectome']\n"
        "from npe2.cli import main\n"
        "main()\n"
    )
    result = _run([sys.executable, "-S", "-c", code], env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout
