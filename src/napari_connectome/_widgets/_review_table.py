"""The Review dock's queue table: a lazy Qt model over the rows of a review session.

A :class:`QTableView` asks the model only for the rows on screen, so a queue of
10,000 candidates is redrawn after an answer without building 10,000 widgets.
"""

from __future__ import annotations

from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableView

#: Column titles.
COLUMNS = ("kind", "segments", "score", "P(wrong)", "status")
_STATUS_COLORS = {"accepted": "#34c759", "rejected": "#ff9f0a", "skipped": "gray"}


class ReviewTableModel(QAbstractTableModel):
    """Rows ``(id, kind, segments, score, prior, status)`` shown as a table, fetched lazily.

    The model holds the row ids only; a row's values are asked of ``fetch(id)``
    when the view draws it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self._fetch = None
        self._index: dict[str, int] = {}

    def set_rows(self, ids: list[str], fetch=None) -> None:
        """Replace all rows (a model reset: the view asks again for what it shows).

        Parameters
        ----------
        ids : list of str
            Row ids in order.
        fetch : callable, optional
            ``fetch(id) -> (id, kind, segments, score, prior, status)``.
        """
        self.beginResetModel()
        self.ids, self._fetch = list(ids), fetch
        self._index = {cid: i for i, cid in enumerate(self.ids)}
        self.endResetModel()

    @property
    def rows(self) -> list[tuple]:
        """List of tuple: Every row's values (fetched now; for tests and small tables)."""
        return [self._fetch(cid) for cid in self.ids]

    def row_of(self, cid: str) -> int:
        """Return the row of a candidate id, -1 when it is not shown."""
        return self._index.get(cid, -1)

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008, N802 - Qt API
        return 0 if parent.isValid() else len(self.ids)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008, N802 - Qt API
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Vertical:
            return str(section + 1)
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        cid, kind, segments, score, prior, status = self._fetch(self.ids[index.row()])
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (
                "merge" if kind == "merge" else "split",
                " + ".join(map(str, segments)),
                f"{score:,.0f}",
                f"{prior:.2f}",
                status,
            )[column]
        if role == Qt.ItemDataRole.ToolTipRole:
            what = "false split: merge them" if kind == "merge" else "false merge: split it"
            return f"{cid}\n{what}"
        if role == Qt.ItemDataRole.ForegroundRole and column == 4 and status in _STATUS_COLORS:
            return QBrush(QColor(_STATUS_COLORS[status]))
        if role == Qt.ItemDataRole.UserRole:
            return cid
        return None


def make_table(model: ReviewTableModel) -> QTableView:
    """Return a read-only, row-selecting table view of ``model``."""
    view = QTableView()
    view.setModel(model)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    view.verticalHeader().setDefaultSectionSize(20)
    view.setMinimumHeight(160)
    return view
