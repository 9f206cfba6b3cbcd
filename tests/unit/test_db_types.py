"""What the database layer reads back from PostgreSQL's text form."""

from datetime import UTC, datetime, timedelta, timezone

from shared.runtime.db import timestamptz_in


def test_timestamps_with_a_zone_are_read_as_aware_datetimes() -> None:
    assert timestamptz_in("2026-12-04 01:23:45.123456+00") == datetime(
        2026, 12, 4, 1, 23, 45, 123456, tzinfo=UTC)
    assert timestamptz_in("2026-12-04 01:23:45+05:30") == datetime(
        2026, 12, 4, 1, 23, 45, tzinfo=timezone(timedelta(hours=5, minutes=30)))


def test_what_a_datetime_cannot_hold_is_left_to_pg8000() -> None:
    assert timestamptz_in("infinity") == "infinity"
    assert timestamptz_in("-infinity") == "-infinity"
