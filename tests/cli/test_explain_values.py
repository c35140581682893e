"""`cti-assets explain VALUE` reads VALUE the way `enrich` does (one normalisation, the intake's):
a defanged, internationalised or uncompressed spelling finds the stored score, as does its STIX
id; and a bad setting is one line before anything is read."""

from __future__ import annotations

import pandas as pd
import pytest

from cti_assets.cli import main as cli
from cti_assets.cli.enrich import guess_observable
from cti_assets.cli.explain import NotScoredError, find_score
from tests.cli.support import one_line

DAY = "2026-11-20"
STORED = {  # value as enrich stores it -> entity type
    "xn--bcher-kva.de": "Domain-Name",
    "2a0d:5600:1:2::15": "IPv6-Addr",
    "plumvane.io": "Domain-Name",
    "45.137.22.90": "IPv4-Addr",
}
HOSTNAME_ID = "hostname--0b6fd1c5-3c05-5a34-9f0e-0f2d1c1c1c1c"  # a source's; enrich makes none


@pytest.fixture
def stored(data_dir):
    """One day of scores holding STORED, written where explain reads."""
    from cti_assets.storage.outputs import partition_path, write_table
    from cti_assets.storage.parquet import FrameBatches

    frame = pd.DataFrame([
        {"stix_id": guess_observable(value)["id"], "entity_type": entity_type,
         "normalized_value": value, "score": 10}
        for value, entity_type in STORED.items()
    ] + [{"stix_id": HOSTNAME_ID, "entity_type": "Hostname", "normalized_value": "wks_042",
          "score": 0}])
    write_table(partition_path("observable_scores", DAY), FrameBatches([frame]))
    return frame


@pytest.mark.parametrize(("given", "found"), [
    ("bücher.de", "xn--bcher-kva.de"),
    ("BÜCHER.DE.", "xn--bcher-kva.de"),
    ("2a0d:5600:1:2:0:0:0:15", "2a0d:5600:1:2::15"),
    ("[2A0D:5600:1:2::15]", "2a0d:5600:1:2::15"),
    ("plumvane[.]io", "plumvane.io"),
    (" PlumVane.IO ", "plumvane.io"),
    ("45.137.22[.]90", "45.137.22.90"),
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("WKS_042", "wks_042"),
])
def test_a_value_is_found_however_it_is_written(stored, given, found):
    key, row = find_score(given)
    assert key == DAY and row["normalized_value"] == found


def test_a_stix_id_is_still_found(stored):
    stix_id = stored["stix_id"].iloc[1]
    assert find_score(stix_id)[1]["stix_id"] == stix_id


@pytest.mark.parametrize("value", ["unknown-explain.example", "garbage value"])
def test_a_value_not_stored_is_still_one_line(stored, capsys, value):
    with pytest.raises(NotScoredError, match="is not in 1 scored partition"):
        find_score(value)
    assert cli.main(["explain", value]) == 2
    captured = capsys.readouterr()
    assert one_line(captured.err).startswith(f"cti-assets explain: {value!r} is not in ")
    assert captured.out == ""


def test_a_bad_setting_is_one_line_naming_it(data_dir, capsys, monkeypatch):
    monkeypatch.setenv("CTI_UNMARKED_TLP", "TLP:PURPLE")
    assert cli.main(["explain", "bücher.de"]) == 2
    captured = capsys.readouterr()
    assert one_line(captured.err).startswith("cti-assets explain: CTI_UNMARKED_TLP='TLP:PURPLE'")
    assert captured.out == ""
    assert not data_dir.exists()
