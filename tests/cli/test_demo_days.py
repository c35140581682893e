"""The demo over more days: consecutive days ending on the demo's last, the sample's observables
each imported once, at weekday volumes (quieter weekends), every day with a mix of types."""

import json
from collections import Counter
from datetime import date

from cti_assets.cli.demo import (
    DEMO_DAYS,
    WEEKDAY_VOLUME,
    day_shares,
    demo_days,
    sample_bundle_path,
    split_sample,
)
from cti_assets.intake.observable import STIX_TO_ENTITY_TYPE


def test_two_days_are_the_demo_days_and_ten_end_on_the_same_day():
    assert demo_days(2) == DEMO_DAYS
    ten = demo_days(10)
    assert len(ten) == 10 and ten[-1] == DEMO_DAYS[-1]
    assert all((date.fromisoformat(b) - date.fromisoformat(a)).days == 1
               for a, b in zip(ten, ten[1:], strict=False))


def test_shares_follow_weekday_volumes_and_add_up():
    days = demo_days(10)
    shares = day_shares(days, 60)
    assert sum(shares) == 60 and min(shares) >= 1
    volume = [WEEKDAY_VOLUME[date.fromisoformat(d).weekday()] for d in days]
    for i in range(len(days)):
        for j in range(len(days)):
            if volume[i] > volume[j]:
                assert shares[i] >= shares[j], (days[i], days[j], shares)
    assert max(shares) >= 2 * min(shares)  # a visible rise and fall, not a flat line


def test_weekday_split_imports_each_observable_once_with_a_mix_per_day(tmp_path):
    days = demo_days(10)
    files = split_sample(days, tmp_path, by_weekday=True)
    bundle = json.loads(sample_bundle_path().read_text())
    expected = Counter(o["id"] for o in bundle["objects"] if o["type"] in STIX_TO_ENTITY_TYPE)
    seen: Counter[str] = Counter()
    per_day = []
    for _day, path in files:
        objects = json.loads(path.read_text())["objects"]
        ours = [o for o in objects if o["type"] in STIX_TO_ENTITY_TYPE]
        seen.update(o["id"] for o in ours)
        per_day.append(ours)
    assert seen == expected
    assert [len(o) for o in per_day] == day_shares(days, len(expected))
    assert all(len({o["type"] for o in ours}) >= 2 for ours in per_day)


def test_the_plain_demo_split_stays_even(tmp_path):
    counts = [sum(o["type"] in STIX_TO_ENTITY_TYPE for o in json.loads(path.read_text())["objects"])
              for _day, path in split_sample(DEMO_DAYS, tmp_path)]
    assert abs(counts[0] - counts[1]) <= 1
