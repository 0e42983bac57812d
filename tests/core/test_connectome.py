import csv

import numpy as np
import pytest

from napari_connectome.core.connectome import (
    connectome_edges,
    connectome_matrix,
    write_edges_csv,
    write_synapse_csv,
)
from napari_connectome.core.synapse_table import SYNAPSE_ROW_DTYPE

DTYPE = SYNAPSE_ROW_DTYPE


def table():
    """Rows: id, z, y, x (nm), pre, post, detection confidence, pair confidence."""
    return np.array(
        [
            (1, 0.0, 40.0, 80.0, 5, 6, 0.9, 0.9),  # polyadic: 5 -> 6 and 5 -> 7
            (1, 0.0, 40.0, 80.0, 5, 7, 0.9, 0.8),
            (2, 50.0, 4.0, 8.0, 5, 6, 0.7, 0.7),
            (3, 50.0, 4.0, 8.0, 6, 5, 0.2, 0.2),
            (4, 50.0, 4.0, 8.0, 6, 0, 0.6, 0.0),  # no postsynaptic partner
            (5, 50.0, 4.0, 8.0, 0, 7, 0.5, 0.5),  # no presynaptic partner
            (6, 50.0, 4.0, 8.0, 7, 7, 0.5, 0.5),  # pre and post merged into one neuron
        ],
        DTYPE,
    )


def test_edges_count_synapses_per_directed_pair():
    edges = connectome_edges(table())
    got = {(int(a), int(b)): int(c) for a, b, c in edges}
    assert got == {(5, 6): 2, (5, 7): 1, (6, 5): 1}
    assert edges["count"].tolist() == sorted(edges["count"].tolist(), reverse=True)
    strong = connectome_edges(table(), min_confidence=0.5)
    assert {(int(a), int(b)) for a, b, _ in strong} == {(5, 6), (5, 7)}


def test_matrix():
    m = connectome_matrix(connectome_edges(table()), [5, 6, 7])
    assert m.tolist() == [[0, 2, 1], [1, 0, 0], [0, 0, 0]]


def test_csv_files(tmp_path):
    edges = connectome_edges(table())
    with (write_edges_csv(tmp_path / "e.csv", edges)).open() as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == ["pre", "post", "count"]
    assert {(r["pre"], r["post"], r["count"]) for r in read} == {
        ("5", "6", "2"),
        ("5", "7", "1"),
        ("6", "5", "1"),
    }
    with (write_synapse_csv(tmp_path / "s.csv", table())).open() as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == [
        "id",
        "z",
        "y",
        "x",
        "pre",
        "post",
        "confidence",
        "partner_confidence",
    ]
    assert len(read) == 7
    assert (read[0]["id"], read[0]["y"], read[0]["pre"], read[0]["post"]) == (
        "1",
        "40.0",
        "5",
        "6",
    )
    assert float(read[0]["confidence"]) == pytest.approx(0.9)
    assert [float(r["partner_confidence"]) for r in read[:2]] == pytest.approx([0.9, 0.8])


def test_csv_readable_by_pandas_and_networkx(tmp_path):
    pd = pytest.importorskip("pandas")
    nx = pytest.importorskip("networkx")
    path = write_edges_csv(tmp_path / "e.csv", connectome_edges(table()))
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["pre", "post", "count"]
    graph = nx.from_pandas_edgelist(frame, "pre", "post", ["count"], create_using=nx.DiGraph)
    assert graph[5][6]["count"] == 2 and not graph.has_edge(7, 5)


def test_table_without_partner_fields():
    with pytest.raises(ValueError, match="pre and post"):
        connectome_edges(np.zeros(2, [("id", int)]))
