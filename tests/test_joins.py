"""Self-comparing join conditions (pipeline/joins.py), checked by running the SQL on real Chinook."""

from __future__ import annotations

import pytest

from pipeline import databases, schema
from pipeline.execute import execute
from pipeline.joins import fix_self_comparisons, remaining_self_comparisons

# (what the 135M model wrote, what it meant): each pair must return the same rows once fixed.
CASES = [
    (
        "SELECT Genre.Name, COUNT(*) FROM Track JOIN Genre ON Genre.GenreId = Genre.GenreId "
        "GROUP BY Genre.Name",
        "SELECT Genre.Name, COUNT(*) FROM Track JOIN Genre ON Track.GenreId = Genre.GenreId "
        "GROUP BY Genre.Name",
    ),
    (
        "SELECT c.LastName, SUM(i.Total) FROM Invoice i JOIN Customer c ON c.CustomerId = c.CustomerId "
        "GROUP BY c.CustomerId",
        "SELECT c.LastName, SUM(i.Total) FROM Invoice i JOIN Customer c ON i.CustomerId = c.CustomerId "
        "GROUP BY c.CustomerId",
    ),
    (
        'SELECT COUNT(*) FROM (SELECT a.Title FROM "Album" a '
        'JOIN "Artist" ar ON ar."ArtistId" = ar."ArtistId")',
        'SELECT COUNT(*) FROM (SELECT a.Title FROM "Album" a '
        'JOIN "Artist" ar ON a."ArtistId" = ar."ArtistId")',
    ),
]


@pytest.fixture(scope="module")
def chinook() -> databases.Database:
    return databases.get("chinook")


def _rows(db: databases.Database, sql: str) -> list:
    return sorted(map(repr, execute(db, sql, 100_000, 10).rows))


@pytest.mark.parametrize(("wrong", "meant"), CASES)
def test_fixed_query_returns_what_was_meant(chinook, wrong: str, meant: str) -> None:
    info = schema.describe(chinook)
    fixed = fix_self_comparisons(wrong, chinook.dialect, info)
    assert remaining_self_comparisons(wrong, chinook.dialect)  # flagged before
    assert remaining_self_comparisons(fixed, chinook.dialect) == []
    assert _rows(chinook, fixed) == _rows(chinook, meant) != _rows(chinook, wrong)


@pytest.mark.parametrize(
    "sql",
    [
        # Track has no PlaylistId: the join needs PlaylistTrack, so there is no single right column.
        "SELECT COUNT(*) FROM Track JOIN Playlist ON Playlist.PlaylistId = Playlist.PlaylistId",
        # A real self-join compares two aliases: not a self-comparison, left alone.
        "SELECT e.LastName FROM Employee e JOIN Employee m ON e.ReportsTo = m.EmployeeId",
        "SELECT * FROM Track WHERE (",  # unparsable: returned as it is, the guard reports it
    ],
)
def test_ambiguous_or_sound_queries_are_left_alone(chinook, sql: str) -> None:
    assert fix_self_comparisons(sql, chinook.dialect, schema.describe(chinook)) == sql


def test_an_unfixable_self_comparison_is_reported_for_repair(chinook) -> None:
    sql = "SELECT COUNT(*) FROM Track JOIN Playlist ON Playlist.PlaylistId = Playlist.PlaylistId"
    assert remaining_self_comparisons(sql, chinook.dialect) == ["Playlist.PlaylistId = Playlist.PlaylistId"]
