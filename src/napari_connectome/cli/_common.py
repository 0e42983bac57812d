"""What every subcommand shares: volume help, the user-error type, the progress line."""

from __future__ import annotations

import sys

VOLUME_HELP = (
    "a volume: PATH or PATH:ARRAY, e.g. vol.npz:raw, vol.h5:/volumes/raw, vol.zarr/raw, vol.tif"
)


class CommandError(Exception):
    """A user-facing error: printed as one clear message, exit status 2."""


def positive_triple(values, what: str) -> tuple:
    if values is None:
        return None
    if len(values) != 3 or any(v <= 0 for v in values):
        raise CommandError(f"{what} needs three positive numbers Z Y X; got {values}")
    return tuple(values)


class ProgressLine:
    """Progress on stderr: one updating bar on a terminal, a few plain lines otherwise."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.width = width
        self.length = 0
        self.last = None

    def __call__(self, fraction: float, message: str) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        filled = int(round(fraction * self.width))
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {int(fraction * 100):3d}% {message}"
        if self.tty:
            self.stream.write("\r" + line + " " * max(0, self.length - len(line)))
            self.length = len(line)
        else:  # a log file: a line per stage and per 10 %
            key = (message.rstrip("0123456789/ "), int(fraction * 10))
            if key == self.last:
                return
            self.last = key
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.length:
            self.stream.write("\n")
            self.stream.flush()
        self.length = 0
