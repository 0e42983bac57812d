"""Run / Cancel / progress / status controls shared by the docks.

A dock gives :class:`RunControls` a function that does the work (off the GUI
thread) and a callback that puts the result on layers (on the GUI thread). With
``progress=True`` the work also gets a thread-safe ``report(fraction, message)``
that drives a determinate progress bar, and a ``should_stop()`` that turns True
when the user cancels, so long work can stop mid-run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from qtpy.QtCore import QObject, Signal, Slot

#: Steps of the determinate progress bar.
_STEPS = 1000


class _Reporter(QObject):
    """Carries progress from the worker thread to the GUI thread (a queued signal)."""

    reported = Signal(float, str)

    def __init__(self, callback: Callable[[float, str], None]) -> None:
        super().__init__()  # created on the GUI thread, so its slot runs there
        self._callback = callback
        self.reported.connect(self._deliver)

    @Slot(float, str)
    def _deliver(self, fraction: float, message: str) -> None:
        self._callback(fraction, message)


class RunControls(Container):
    """A Run button, a Cancel button, a busy bar and a one-line status.

    Parameters
    ----------
    run_text : str
        Text of the Run button.
    """

    def __init__(self, run_text: str = "Run") -> None:
        self.run_button = PushButton(text=run_text)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(min=0, max=1, value=0, visible=False)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # long messages wrap instead of being cut
        buttons = Container(widgets=[self.run_button, self.cancel_button], layout="horizontal")
        buttons.margins = (0, 0, 0, 0)
        super().__init__(widgets=[buttons, self.progress, self.status], labels=False)
        self.margins = (0, 0, 0, 0)
        self.cancel_button.changed.connect(self.cancel)
        self.worker = None
        self._stop: threading.Event | None = None
        self._reporter: _Reporter | None = None

    def start(
        self,
        work: Callable[..., object],
        on_done: Callable[[object], None],
        busy_message: str,
        *,
        progress: bool = False,
    ) -> None:
        """Run ``work`` in a napari worker thread and hand its result to ``on_done``.

        Parameters
        ----------
        work : callable
            Called off the GUI thread; returns the result. Called with no
            arguments, or as ``work(report, should_stop)`` when ``progress``.
        on_done : callable
            Called on the GUI thread with the result, unless the run was cancelled.
        busy_message : str
            Shown while the work runs.
        progress : bool
            Give ``work`` a thread-safe ``report(fraction, message)`` (shown by a
            determinate bar, see :meth:`report`) and a ``should_stop()`` that
            returns True once the run is cancelled.
        """
        from napari.qt.threading import create_worker

        self.cancel()
        worker = None
        stop = threading.Event()

        def report_here(fraction: float, message: str) -> None:
            if self.worker is worker and not stop.is_set():
                self.report(fraction, message)

        target = work
        if progress:
            reporter = _Reporter(report_here)
            self._reporter = reporter

            def target():
                return work(reporter.reported.emit, stop.is_set)

        def finish(result):
            if self.worker is not worker:
                return
            self._set_busy(False, "")
            self.worker = None
            on_done(result)

        def fail(error: Exception):
            if self.worker is not worker:
                return
            self.worker = None
            self._set_busy(False, f"Error: {error}")
            if not isinstance(error, ValueError | TypeError | MemoryError):
                raise error  # a bug, not bad input: let napari show the traceback

        worker = create_worker(
            target, _start_thread=False, _connect={"returned": finish, "errored": fail}
        )
        self.worker = worker
        self._stop = stop
        self._set_busy(True, busy_message)
        if progress:
            self.progress.min, self.progress.max, self.progress.value = 0, _STEPS, 0
        worker.start()

    def report(self, fraction: float, message: str) -> None:
        """Show progress: a determinate bar at ``fraction`` and ``message`` (GUI thread).

        Parameters
        ----------
        fraction : float
            Share of the work done, in [0, 1].
        message : str
            What is being done (shown in the status line).
        """
        self.progress.min, self.progress.max = 0, _STEPS
        self.progress.value = int(round(min(max(float(fraction), 0.0), 1.0) * _STEPS))
        self.status.value = message

    def cancel(self) -> None:
        """Cancel the running work: ``should_stop()`` turns True and its result is dropped."""
        if self.worker is None:
            return
        if self._stop is not None:
            self._stop.set()
        self.worker.quit()
        self.worker = None
        self._set_busy(False, "Cancelled.")

    def _set_busy(self, busy: bool, message: str) -> None:
        self.run_button.enabled = not busy
        self.cancel_button.enabled = busy
        self.progress.visible = busy
        if busy:
            self.progress.min = self.progress.max = 0  # an indeterminate busy bar
        else:
            self.progress.max = 1
        self.status.value = message
