"""Run / Cancel / progress / status controls shared by the docks.

A dock gives :class:`RunControls` a function that does the work (off the GUI
thread) and a callback that puts the result on layers (on the GUI thread).
"""

from __future__ import annotations

from collections.abc import Callable

from magicgui.widgets import Container, Label, ProgressBar, PushButton


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
        buttons = Container(widgets=[self.run_button, self.cancel_button], layout="horizontal")
        buttons.margins = (0, 0, 0, 0)
        super().__init__(widgets=[buttons, self.progress, self.status], labels=False)
        self.margins = (0, 0, 0, 0)
        self.cancel_button.changed.connect(self.cancel)
        self.worker = None

    def start(
        self,
        work: Callable[[], object],
        on_done: Callable[[object], None],
        busy_message: str,
    ) -> None:
        """Run ``work`` in a napari worker thread and hand its result to ``on_done``.

        Parameters
        ----------
        work : callable
            Called with no arguments off the GUI thread; returns the result.
        on_done : callable
            Called on the GUI thread with the result, unless the run was cancelled.
        busy_message : str
            Shown while the work runs.
        """
        from napari.qt.threading import create_worker

        self.cancel()
        worker = None

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
            work, _start_thread=False, _connect={"returned": finish, "errored": fail}
        )
        self.worker = worker
        self._set_busy(True, busy_message)
        worker.start()

    def cancel(self) -> None:
        """Abandon the running work: its result, when it comes, is dropped."""
        if self.worker is None:
            return
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
