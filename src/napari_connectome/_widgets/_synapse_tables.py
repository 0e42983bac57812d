"""The Synapses dock's two tables: the sortable synapse list and the connectivity heat map.

The synapse list is a :class:`QTableView` over a model of numpy columns (cells
are made on demand, so refreshing after a proofreading edit stays fast), sorted
by value through a :class:`QSortFilterProxyModel`.

matplotlib is not a dependency of the plugin, so the connectivity matrix is
drawn as a :class:`QTableWidget` heat map: one cell per (presynaptic,
postsynaptic) neuron pair, its count written in it and its colour from white
(no synapse) to dark red (the largest count shown).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QSortFilterProxyModel, Qt
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QAbstractItemView, QTableView, QTableWidget, QTableWidgetItem

#: Columns of the synapse table.
COLUMNS = ("id", "z (nm)", "y (nm)", "x (nm)", "pre", "post", "confidence", "partner conf.")

_SORT_ROLE = Qt.ItemDataRole.UserRole + 1
_FORMATS = ("{:d}", "{:.0f}", "{:.0f}", "{:.0f}", "{:d}", "{:d}", "{:.2f}", "{:.2f}")
_INTEGER = (0, 4, 5)


class _RowsModel(QAbstractTableModel):
    """Columns of numbers, shown formatted and sorted by value (cells made on demand)."""

    def __init__(self) -> None:
        super().__init__()
        self.columns: list[np.ndarray] = [np.zeros(0) for _ in COLUMNS]

    def set_columns(self, columns: list[np.ndarray]) -> None:
        self.beginResetModel()
        self.columns = columns
        self.endResetModel()

    def rowCount(self, parent=None) -> int:  # noqa: N802 - Qt's name
        return 0 if parent is not None and parent.isValid() else len(self.columns[0])

    def columnCount(self, parent=None) -> int:  # noqa: N802 - Qt's name
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        column = index.column()
        value = self.columns[column][index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return _FORMATS[column].format(int(value) if column in _INTEGER else float(value))
        if role == _SORT_ROLE:
            return float(value)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None


class SynapseTableWidget(QTableView):
    """The synapse list: one row per (synapse, postsynaptic partner), sortable by any column.

    Parameters
    ----------
    on_row : callable
        ``on_row(index)`` with the index (into the rows last given to
        :meth:`set_rows`) of a clicked row.
    """

    def __init__(self, on_row: Callable[[int], None]) -> None:
        super().__init__()
        self.source = _RowsModel()
        self.proxy = QSortFilterProxyModel()
        self.proxy.setSourceModel(self.source)
        self.proxy.setSortRole(_SORT_ROLE)
        self.setModel(self.proxy)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.setSortingEnabled(True)
        self.sortByColumn(0, Qt.SortOrder.AscendingOrder)  # by synapse id at first
        self.setMinimumHeight(160)
        self._on_row = on_row
        self.clicked.connect(lambda index: self.click(index.row()))

    def set_rows(self, rows: np.ndarray, positions_nm: np.ndarray, confidence: np.ndarray) -> None:
        """Show table rows (the current sort order is kept).

        Parameters
        ----------
        rows : numpy.ndarray
            ``SynapseTable.rows()`` (or a subset).
        positions_nm : numpy.ndarray
            ``(len(rows), 3)`` z, y, x of each row in nm from the image's first voxel.
        confidence : numpy.ndarray
            Detection confidence of each row's synapse.
        """
        positions_nm = np.asarray(positions_nm, float).reshape(-1, 3)
        names = rows.dtype.names or ()
        pair = rows["partner_confidence"] if "partner_confidence" in names else np.zeros(len(rows))
        columns = [
            np.asarray(rows["id"]),
            positions_nm[:, 0],
            positions_nm[:, 1],
            positions_nm[:, 2],
            np.asarray(rows["pre"]),
            np.asarray(rows["post"]),
            np.asarray(confidence, float),
            np.asarray(pair, float),
        ]
        first = self.source.rowCount() == 0
        self.source.set_columns(columns)
        if first and len(rows):
            self.resizeColumnsToContents()

    def rowCount(self) -> int:  # noqa: N802 - as QTableWidget
        """Return the number of rows shown."""
        return self.proxy.rowCount()

    def text(self, row: int, column: int) -> str:
        """Return the text shown in a cell (rows in the current sort order)."""
        return str(self.proxy.data(self.proxy.index(row, column)))

    def row_index(self, table_row: int) -> int:
        """Return the index (into the rows given) shown at a table row."""
        return int(self.proxy.mapToSource(self.proxy.index(table_row, 0)).row())

    def click(self, table_row: int) -> None:
        """Act as a click on a table row: hand its row index to ``on_row``."""
        if 0 <= table_row < self.rowCount():
            self._on_row(self.row_index(table_row))


class ConnectivityMatrix(QTableWidget):
    """A heat map of synapse counts between chosen neurons (rows: pre, columns: post)."""

    def __init__(self) -> None:
        super().__init__(0, 0)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setMinimumHeight(140)
        self.setToolTip("synapse counts: row = presynaptic neuron, column = postsynaptic neuron")
        self.counts = np.zeros((0, 0), np.int64)
        self.neurons: list[int] = []

    def set_matrix(self, neurons, counts: np.ndarray) -> None:
        """Show a ``(k, k)`` count matrix of ``neurons`` (pre rows, post columns).

        Parameters
        ----------
        neurons : sequence of int
            Segment ids, in order.
        counts : numpy.ndarray
            ``counts[i, j]`` synapses from ``neurons[i]`` onto ``neurons[j]``.
        """
        self.neurons = [int(n) for n in neurons]
        self.counts = np.asarray(counts, np.int64)
        k = len(self.neurons)
        self.clear()
        self.setRowCount(k)
        self.setColumnCount(k)
        labels = [str(n) for n in self.neurons]
        self.setHorizontalHeaderLabels([f"→{n}" for n in labels])
        self.setVerticalHeaderLabels([f"{n}→" for n in labels])
        top = max(int(self.counts.max()) if self.counts.size else 0, 1)
        for i in range(k):
            for j in range(k):
                value = int(self.counts[i, j])
                item = QTableWidgetItem(str(value) if value else "")
                item.setTextAlignment(int(Qt.AlignmentFlag.AlignCenter))
                shade = value / top
                color = QColor.fromRgbF(1.0, 1.0 - 0.85 * shade, 1.0 - 0.85 * shade)
                item.setBackground(QBrush(color))
                item.setForeground(QBrush(QColor("white" if shade > 0.6 else "black")))
                item.setToolTip(f"{self.neurons[i]} → {self.neurons[j]}: {value} synapses")
                self.setItem(i, j, item)
        self.resizeColumnsToContents()
        self.resizeRowsToContents()
