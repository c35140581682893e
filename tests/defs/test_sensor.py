"""Sensor cursor scenarios: run requests and next cursor for each kind of tick."""

import json
from datetime import UTC, datetime, timedelta

from cti_assets.defs.automation import Watermark, plan_sensor_tick

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def items(day: str, count: int, start_hour: int = 0) -> list[tuple[datetime, str]]:
    base = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(hours=start_hour)
    return [(base + timedelta(seconds=n), f"ipv4-addr--{day}-{n:06d}") for n in range(count)]


def test_first_tick_with_nothing_in_the_source_skips_and_keeps_no_cursor():
    requests, cursor, skip = plan_sensor_tick(None, [], NOW)
    assert requests == []
    assert cursor is None
    assert "no observables" in skip


def test_nothing_new_keeps_the_cursor():
    previous = Watermark(datetime(2026, 11, 27, tzinfo=UTC), "x").to_cursor()
    requests, cursor, skip = plan_sensor_tick(previous, [], NOW)
    assert requests == [] and cursor == previous and skip


def test_new_observables_in_one_day_request_one_run():
    new = items("2026-11-27", 5)
    requests, cursor, skip = plan_sensor_tick(None, new, NOW)
    assert skip is None
    assert [r.partition_key for r in requests] == ["2026-11-27"]
    assert requests[0].tags["cti/new_observables"] == "5"
    watermark = json.loads(cursor)
    assert watermark["id"] == new[-1][1]
    assert datetime.fromisoformat(watermark["created_at"]) == new[-1][0]
    assert requests[0].run_key.startswith("2026-11-27:")


def test_new_across_two_days_request_one_run_each_with_distinct_keys():
    new = items("2026-11-26", 3, start_hour=23) + items("2026-11-27", 2)
    requests, cursor, _ = plan_sensor_tick(None, new, NOW)
    assert [r.partition_key for r in requests] == ["2026-11-26", "2026-11-27"]
    assert len({r.run_key for r in requests}) == 2
    assert json.loads(cursor)["id"] == max(new)[1]


def test_same_watermark_gives_same_run_keys_so_dagster_dedupes_them():
    new = items("2026-11-27", 4)
    first, _, _ = plan_sensor_tick(None, new, NOW)
    again, _, _ = plan_sensor_tick(None, new, NOW)
    assert [r.run_key for r in first] == [r.run_key for r in again]


def test_burst_of_ten_thousand_is_one_run_per_day_and_a_small_cursor():
    new = items("2026-11-25", 4000) + items("2026-11-26", 6000)
    requests, cursor, _ = plan_sensor_tick(None, new, NOW)
    assert [r.partition_key for r in requests] == ["2026-11-25", "2026-11-26"]
    assert [r.tags["cti/new_observables"] for r in requests] == ["4000", "6000"]
    assert len(cursor) < 200


def test_days_outside_the_partitions_are_reported_not_requested():
    new = items("1999-01-01", 2)
    requests, cursor, skip = plan_sensor_tick(None, new, NOW)
    assert requests == []
    assert "1999-01-01" in skip
    assert json.loads(cursor)["id"] == new[-1][1]
