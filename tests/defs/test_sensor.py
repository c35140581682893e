"""Sensor cursor scenarios: run requests and next cursor for each kind of tick."""

import json
from datetime import UTC, datetime, timedelta

import pytest

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


def test_an_observable_dated_after_now_waits_and_never_carries_the_watermark_past_now():
    new = items("2026-11-28", 3)
    future = (datetime(2030, 1, 1, tzinfo=UTC), "ipv4-addr--from-the-future")
    requests, cursor, skip = plan_sensor_tick(None, [*new, future], NOW)
    assert [r.partition_key for r in requests] == ["2026-11-28"]
    assert requests[0].tags["cti/new_observables"] == "3"
    assert json.loads(cursor)["id"] == new[-1][1]  # not the future one
    # alone, it is held back with a reason and the cursor stays
    requests, again, skip = plan_sensor_tick(cursor, [future], NOW)
    assert requests == [] and again == cursor
    assert "dated after now" in skip and "2030-01-01" in skip
    # once its time has come it is taken like any other
    requests, later, _ = plan_sensor_tick(cursor, [future], future[0] + timedelta(days=1))
    assert [r.partition_key for r in requests] == ["2030-01-01"]
    assert json.loads(later)["id"] == future[1]


# --- the real sensor on a real instance: late arrivals behind the watermark -----------------


def _ipv4(value: str) -> dict:
    import uuid

    return {"type": "ipv4-addr", "spec_version": "2.1",
            "id": f"ipv4-addr--{uuid.uuid5(uuid.NAMESPACE_URL, value)}", "value": value}


def _tick(instance, store_path, cursor):
    import dagster as dg

    from cti_assets.defs.automation import new_observables_sensor
    from cti_assets.defs.resources import SourceResource

    context = dg.build_sensor_context(
        instance=instance, cursor=cursor,
        resources={"source": SourceResource(store_path=str(store_path))})
    result = new_observables_sensor(context)
    return result.run_requests, result.cursor


@pytest.fixture
def sensor_world(tmp_path, monkeypatch):
    import dagster as dg

    from cti_assets.sources.local import LocalStixStore

    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    with dg.instance_for_test() as instance:
        yield instance, LocalStixStore(tmp_path / "store.sqlite")


def test_indexing_delay_an_object_visible_after_newer_ones_is_enriched_once(sensor_world):
    instance, store = sensor_world
    now = datetime.now(UTC).replace(microsecond=0)
    store.write_objects([_ipv4("198.51.100.20")], first_seen_at=now - timedelta(minutes=1))
    requests, cursor = _tick(instance, store.path, None)
    assert [r.tags["cti/new_observables"] for r in requests] == ["1"]

    # created five minutes ago, behind the watermark, visible only now
    store.write_objects([_ipv4("198.51.100.21")], first_seen_at=now - timedelta(minutes=5))
    requests, cursor = _tick(instance, store.path, cursor)
    assert [r.partition_key for r in requests] == [(now - timedelta(minutes=5)).strftime(
        "%Y-%m-%d")]
    assert requests[0].tags["cti/late_observables"] == "1"

    requests, cursor_after = _tick(instance, store.path, cursor)  # nothing enriched twice
    assert requests == []


def test_backdated_import_within_the_look_back_gets_a_run_for_its_day(sensor_world, tmp_path,
                                                                      monkeypatch):
    import json

    from cti_assets.sources.bundle_files import import_bundles

    instance, store = sensor_world
    monkeypatch.setenv("CTI_SENSOR_LOOKBACK_S", str(3 * 86400))
    now = datetime.now(UTC).replace(microsecond=0)
    store.write_objects([_ipv4("198.51.100.30")], first_seen_at=now - timedelta(minutes=1))
    _, cursor = _tick(instance, store.path, None)

    past = now - timedelta(days=2)
    path = tmp_path / "past.json"
    path.write_text(json.dumps({"type": "bundle", "id": "bundle--" + "1" * 8 + "-1111-4111-8111-"
                                + "1" * 12, "objects": [_ipv4("198.51.100.31")]}))
    import_bundles(store, [path], created_at=past)
    requests, cursor = _tick(instance, store.path, cursor)
    assert [r.partition_key for r in requests] == [past.strftime("%Y-%m-%d")]
    assert requests[0].tags["cti/late_observables"] == "1"
    requests, _ = _tick(instance, store.path, cursor)
    assert requests == []


def test_without_a_look_back_the_late_arrival_is_missed(sensor_world, monkeypatch):
    """What the look-back buys: the same delay with CTI_SENSOR_LOOKBACK_S=0 is never seen."""
    instance, store = sensor_world
    monkeypatch.setenv("CTI_SENSOR_LOOKBACK_S", "0")
    now = datetime.now(UTC).replace(microsecond=0)
    store.write_objects([_ipv4("198.51.100.40")], first_seen_at=now - timedelta(minutes=1))
    _, cursor = _tick(instance, store.path, None)
    store.write_objects([_ipv4("198.51.100.41")], first_seen_at=now - timedelta(minutes=5))
    requests, _ = _tick(instance, store.path, cursor)
    assert requests == []


def test_small_days_run_in_one_process_and_big_ones_per_step(monkeypatch):
    """A sensor run over a few observables asks the executor for one process (no step
    start-up); a big day keeps a process per step; the limit is CTI_SENSOR_IN_PROCESS_MAX."""
    from datetime import UTC, datetime

    from cti_assets.defs.automation import IN_PROCESS_RUN, plan_sensor_tick

    monkeypatch.setenv("CTI_SENSOR_IN_PROCESS_MAX", "3")
    small = [(datetime(2026, 11, 20, 9, n, tzinfo=UTC), f"ipv4-addr--{n}") for n in range(3)]
    big = [(datetime(2026, 11, 21, 9, n, tzinfo=UTC), f"ipv4-addr--b{n}") for n in range(4)]
    requests, _, _ = plan_sensor_tick(None, small + big, datetime(2026, 11, 22, tzinfo=UTC))
    by_day = {r.partition_key: r for r in requests}
    assert by_day["2026-11-20"].run_config == IN_PROCESS_RUN
    assert by_day["2026-11-21"].run_config == {}


def test_a_future_dated_import_does_not_stop_the_sensor_seeing_later_ones(sensor_world):
    instance, store = sensor_world
    now = datetime.now(UTC).replace(microsecond=0)
    store.write_objects([_ipv4("198.51.100.40")], first_seen_at=datetime(2030, 1, 1, tzinfo=UTC))
    requests, cursor = _tick(instance, store.path, None)
    assert requests == []
    store.write_objects([_ipv4("198.51.100.41")], first_seen_at=now - timedelta(seconds=5))
    requests, cursor = _tick(instance, store.path, cursor)
    assert [r.partition_key for r in requests] == [now.strftime("%Y-%m-%d")]
    assert requests[0].tags["cti/new_observables"] == "1"


def test_a_cursor_already_carried_past_now_reads_again_from_the_look_back(sensor_world):
    instance, store = sensor_world
    now = datetime.now(UTC).replace(microsecond=0)
    poisoned = Watermark(datetime(2030, 1, 1, tzinfo=UTC), "ipv4-addr--x").to_cursor()
    store.write_objects([_ipv4("198.51.100.42")], first_seen_at=now - timedelta(minutes=2))
    requests, cursor = _tick(instance, store.path, poisoned)
    assert [r.partition_key for r in requests] == [
        (now - timedelta(minutes=2)).strftime("%Y-%m-%d")]
    assert datetime.fromisoformat(json.loads(cursor)["created_at"]) <= now
