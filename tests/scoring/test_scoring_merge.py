"""merged_enrichment: one row per observable, provider columns, typed fields."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cti_assets.providers.fields import PROVIDER_FIELDS, column, is_list
from cti_assets.providers.typed_fields import ARROW_TYPES, typed_field_columns, with_typed_fields
from cti_assets.scoring.merge import merge_lookups, merged_columns
from tests.scoring.scoring_factories import (
    Lookup,
    lookup_frame,
    observable,
    observables_frame,
)


def _setup(n: int = 4):
    rows = [observable(i) for i in range(n - 1)] + [observable(n - 1, status="rejected",
                                                               reason="bad value")]
    frame = observables_frame(rows)
    types = dict(zip(frame["stix_id"], frame["entity_type"], strict=True))
    return frame, types


def test_one_row_per_observable_with_columns_of_present_providers_only():
    observables, types = _setup()
    ids = list(observables["stix_id"])
    vt = lookup_frame("virustotal", {
        ids[0]: Lookup(fields={"malicious": 3, "tags": ["a", "b"]}),
        ids[1]: Lookup(status="not_found"),
        ids[3]: Lookup(status="skipped", reason="rejected"),
    }, types)
    merged = merge_lookups(observables, {"virustotal": vt})
    assert len(merged) == len(observables)
    assert list(merged["stix_id"]) == ids
    assert all(name in merged.columns for name in merged_columns("virustotal"))
    assert not any(name.startswith("abuseipdb__") for name in merged.columns)
    status = merged[column("virustotal", "status")]
    assert list(status.fillna("<none>")) == ["ok", "not_found", "<none>", "skipped"]
    assert merged.loc[3, "status"] == "rejected"
    assert merged.loc[0, column("virustotal", "malicious")] == 3
    assert merged.loc[0, column("virustotal", "tags")] == ["a", "b"]
    assert pd.isna(merged.loc[1, column("virustotal", "malicious")])
    assert merged[column("virustotal", "malicious")].dtype == "Int64"
    assert merged[column("virustotal", "raw_digest")].notna().tolist() == [
        True, False, False, False
    ]


def test_every_provider_field_gets_its_dtype():
    observables, types = _setup(2)
    sid = observables["stix_id"].iloc[0]
    lookups = {
        provider: lookup_frame(provider, {sid: Lookup(fields={})}, types)
        for provider in PROVIDER_FIELDS
    }
    merged = merge_lookups(observables, lookups)
    for provider, fields in PROVIDER_FIELDS.items():
        for name, dtype in fields.items():
            series = merged[column(provider, name)]
            assert series.isna().all()
            if is_list(dtype):
                assert series.dtype == pd.ArrowDtype(ARROW_TYPES[dtype]), (provider, name)
            else:
                assert str(series.dtype) == dtype, (provider, name)


def test_lookup_rows_join_on_stix_id_whatever_their_order():
    observables, types = _setup(5)
    answers = {sid: Lookup(fields={"abuse_confidence_score": i * 10})
               for i, sid in enumerate(observables["stix_id"])}
    lookups = lookup_frame("abuseipdb", answers, types)
    in_order = merge_lookups(observables, {"abuseipdb": lookups})
    shuffled = merge_lookups(observables, {"abuseipdb": lookups.iloc[[3, 0, 4, 2, 1]]})
    pd.testing.assert_frame_equal(in_order, shuffled)
    assert list(in_order[column("abuseipdb", "abuse_confidence_score")]) == [0, 10, 20, 30, 40]


def test_a_repeated_stix_id_keeps_its_last_row():
    observables, types = _setup(2)
    sid = observables["stix_id"].iloc[0]
    first = lookup_frame("greynoise", {sid: Lookup(fields={"classification": "benign"})}, types)
    last = lookup_frame("greynoise", {sid: Lookup(fields={"classification": "malicious"})}, types)
    merged = merge_lookups(observables, {"greynoise": pd.concat([first, last])})
    assert merged.loc[0, column("greynoise", "classification")] == "malicious"


def test_bad_input_gets_a_clear_error():
    observables, types = _setup(2)
    sid = observables["stix_id"].iloc[0]
    frame = lookup_frame("virustotal", {sid: Lookup()}, types)
    with pytest.raises(ValueError, match="unknown provider 'virustotally'"):
        merge_lookups(observables, {"virustotally": frame})
    broken = frame.assign(fields="{not json")
    with pytest.raises(ValueError, match="virustotal lookups: 'fields' is not valid JSON"):
        merge_lookups(observables, {"virustotal": broken})
    wrong_type = frame.assign(fields=json.dumps({"malicious": "many"}))
    with pytest.raises(ValueError, match="virustotal field 'malicious' does not hold Int64"):
        merge_lookups(observables, {"virustotal": wrong_type})
    ports_as_text = frame.assign(fields=json.dumps({"tags": [["nested"]]}))
    with pytest.raises(ValueError, match="virustotal field 'tags' does not hold list"):
        merge_lookups(observables, {"virustotal": ports_as_text})
    with pytest.raises(ValueError, match="must be a JSON object, got list"):
        merge_lookups(observables, {"virustotal": frame.assign(fields="[1, 2]")})
    with pytest.raises(ValueError, match="lack column"):
        merge_lookups(observables, {"virustotal": frame.drop(columns=["status"])})


def test_no_providers_gives_the_observables_back():
    observables, _ = _setup(3)
    merged = merge_lookups(observables, {})
    pd.testing.assert_frame_equal(merged, observables)


def test_texts_arrow_cannot_read_in_one_pass_parse_the_same_one_by_one():
    """Pretty-printed JSON, integral floats and extra keys: the slow path gives the same
    typed values as the one-pass parse of the same documents written compactly."""
    observables, types = _setup(4)
    ids = list(observables["stix_id"])
    documents = {
        ids[0]: {"malicious": 3, "reputation": -2, "tags": ["a"], "extra": {"x": 1}},
        ids[1]: {"malicious": 0, "threat_names": [], "last_analysis_date": 1_700_000_000},
        ids[2]: {},
    }
    compact = lookup_frame("virustotal", {
        sid: Lookup(fields=doc) for sid, doc in documents.items()}, types)
    awkward = compact.copy()
    awkward["fields"] = [
        json.dumps(documents[ids[0]], indent=2),
        json.dumps({**documents[ids[1]], "malicious": 0.0}),
        "null",
    ]
    one_pass = merge_lookups(observables, {"virustotal": compact})
    one_by_one = merge_lookups(observables, {"virustotal": awkward})
    pd.testing.assert_frame_equal(one_pass, one_by_one)
    assert one_pass.loc[0, column("virustotal", "reputation")] == -2
    assert one_pass.loc[1, column("virustotal", "threat_names")] == []
    assert pd.isna(one_pass.loc[2, column("virustotal", "malicious")])
    assert pd.isna(one_pass.loc[3, column("virustotal", "tags")])


def test_list_fields_keep_their_item_types():
    observables, types = _setup(3)
    ids = list(observables["stix_id"])
    lookups = lookup_frame("abuseipdb", {
        ids[0]: Lookup(fields={"categories": [18, 14]}),
        ids[1]: Lookup(fields={"categories": []}),
    }, types)
    merged = merge_lookups(observables, {"abuseipdb": lookups})
    categories = merged[column("abuseipdb", "categories")]
    assert categories[0] == [18, 14] and categories[1] == [] and pd.isna(categories[2])
    assert categories.explode().dropna().astype(int).tolist() == [18, 14]


def _vt_answers(observables: pd.DataFrame) -> dict[str, Lookup]:
    ids = list(observables["stix_id"])
    return {
        ids[0]: Lookup(fields={"malicious": 3, "tags": ["a", "b"], "reputation": -2}),
        ids[1]: Lookup(fields={"malicious": 0, "threat_names": [], "tags": None}),
        ids[2]: Lookup(status="not_found"),
    }


def test_stored_typed_fields_merge_exactly_like_their_json():
    observables, types = _setup(5)
    lookups = lookup_frame("virustotal", _vt_answers(observables), types)
    typed = with_typed_fields("virustotal", lookups)
    assert list(typed.columns) == [*lookups.columns, *typed_field_columns("virustotal")]
    assert typed.loc[0, column("virustotal", "malicious")] == 3
    assert typed[column("virustotal", "malicious")].dtype == "Int64"
    from_json = merge_lookups(observables, {"virustotal": lookups})
    # The typed columns win: JSON that disagrees with them is not read.
    from_typed = merge_lookups(observables, {"virustotal": typed.assign(fields="{not json")})
    pd.testing.assert_frame_equal(from_typed, from_json)
    # Reordered lookup rows still join on stix_id.
    shuffled = merge_lookups(observables, {"virustotal": typed.iloc[[2, 0, 1]]})
    pd.testing.assert_frame_equal(shuffled, from_json)


def test_typed_fields_of_an_older_field_list_fall_back_to_the_json():
    observables, types = _setup(4)
    lookups = lookup_frame("virustotal", _vt_answers(observables), types)
    typed = with_typed_fields("virustotal", lookups)
    stale = typed.drop(columns=[column("virustotal", "reputation")])
    stale[column("virustotal", "malicious")] = pd.array([99, 99, None], dtype="Int64")
    merged = merge_lookups(observables, {"virustotal": stale})
    assert merged.loc[0, column("virustotal", "malicious")] == 3  # from the JSON
    assert merged.loc[0, column("virustotal", "reputation")] == -2


def test_a_stored_typed_column_of_the_wrong_type_gets_a_clear_error():
    observables, types = _setup(4)
    typed = with_typed_fields("virustotal", lookup_frame("virustotal", _vt_answers(observables),
                                                         types))
    typed[column("virustotal", "malicious")] = ["many", "few", None]
    with pytest.raises(ValueError, match="'virustotal__malicious' does not hold Int64"):
        merge_lookups(observables, {"virustotal": typed})
