"""Start a virtual X display (Xvfb) for headless runs that need a napari window."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path


class DisplayError(RuntimeError):
    """No display is available and none could be started."""


def _free_display_number(start: int = 90) -> int:
    for number in range(start, start + 100):
        if (
            not Path(f"/tmp/.X{number}-lock").exists()
            and not Path(f"/tmp/.X11-unix/X{number}").exists()
        ):
            return number
    raise DisplayError("no free X display number between :90 and :189")


@contextmanager
def virtual_display(size: tuple[int, int] = (1600, 1000)):
    """Run the body with ``DISPLAY`` pointing at a fresh Xvfb server.

    Parameters
    ----------
    size : tuple of int
        Width and height of the virtual screen in pixels.

    Yields
    ------
    str
        The display name, for example ``":90"``.

    Raises
    ------
    DisplayError
        When Xvfb is not installed or does not start.
    """
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise DisplayError(
            "no display and no Xvfb to make one: install it (Debian/Ubuntu: "
            "`apt-get install xvfb`) or run `bash run.sh`, which installs it"
        )
    number = _free_display_number()
    display = f":{number}"
    screen = f"{size[0]}x{size[1]}x24"
    process = subprocess.Popen(
        [xvfb, display, "-screen", "0", screen, "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    socket = Path(f"/tmp/.X11-unix/X{number}")
    deadline = time.monotonic() + 10
    while not socket.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise DisplayError(f"Xvfb did not start on display {display}")
        time.sleep(0.05)
    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    try:
        yield display
    finally:
        if previous is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = previous
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
