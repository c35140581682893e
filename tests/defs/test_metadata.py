"""What a data engineer sees on the asset pages: every asset has owners, tags and a column
schema that matches the Parquet it stores; row counts, verdict and score-bucket counts and
provider figures are numbers (plotted across partitions); the scores' column lineage reaches
the typed lookup columns through merged_enrichment, and covers every column scoring reads of
a real day."""

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cti_assets.definitions import defs as loaded_defs
from tests.defs.test_pipeline import DAY, pipeline, run  # noqa: F401 (fixture)

ALL_ASSETS = sorted(k.to_user_string() for k in loaded_defs.resolve_asset_graph()
                    .get_all_asset_keys())


def materializations(result) -> dict[str, dict]:
    return {e.asset_key.to_user_string(): e.event_specific_data.materialization.metadata
            for e in result.get_asset_materialization_events()}


def test_every_asset_has_owners_tags_and_a_column_schema():
    graph = loaded_defs.resolve_asset_graph()
    for name in ALL_ASSETS:
        node = graph.get(dg.AssetKey(name))
        assert node.owners, name
        assert node.tags.get("domain") == "cti", name
        schema = node.metadata["dagster/column_schema"]
        assert isinstance(schema, dg.TableSchema) and schema.columns, name


def test_every_column_of_every_schema_is_described():
    """The asset pages' column schema says what each column holds (tables.py's descriptions,
    a provider's columns worded from providers/fields.py), and no description is left over
    for a column that is gone."""
    from cti_assets.schemas import asset_columns, asset_descriptions

    graph = loaded_defs.resolve_asset_graph()
    for name in ALL_ASSETS:
        assert set(asset_descriptions(name)) == set(asset_columns(name)), name
        columns = graph.get(dg.AssetKey(name)).metadata["dagster/column_schema"].columns
        assert [c.name for c in columns] == list(asset_columns(name)), name
        for column in columns:
            assert column.description and column.description.strip(), (name, column.name)
    described = {c.name: c.description for c in graph.get(dg.AssetKey("merged_enrichment"))
                 .metadata["dagster/column_schema"].columns}
    assert "VirusTotal" in described["virustotal__malicious"]
    assert "GreyNoise" in described["greynoise__status"]
    assert "benign" in described["greynoise__classification"]  # fields.py's note


@pytest.fixture
def materialized(pipeline):  # noqa: F811
    defs, sandbox, instance = pipeline
    return run(defs, instance), defs


def test_schemas_match_the_stored_tables_and_counts_are_numbers(materialized):
    from cti_assets.storage.outputs import local_path, partition_path

    result, defs = materialized
    events = materializations(result)
    graph = defs.resolve_asset_graph()
    for name in ALL_ASSETS:
        stored = pq.read_schema(local_path(partition_path(name, DAY))).names
        schema = [c.name for c in graph.get(dg.AssetKey(name)).metadata[
            "dagster/column_schema"].columns]
        assert stored == schema, name
        rows = pq.read_metadata(local_path(partition_path(name, DAY))).num_rows
        assert events[name]["dagster/row_count"] == dg.MetadataValue.int(rows), name

    scores = events["observable_scores"]
    rows = scores["dagster/row_count"].value
    verdicts = {k: v for k, v in scores.items() if k.startswith("verdict_")}
    assert set(verdicts) == {"verdict_malicious", "verdict_suspicious", "verdict_benign",
                             "verdict_unknown"}
    assert all(isinstance(v, dg.IntMetadataValue) for v in verdicts.values())
    assert sum(v.value for v in verdicts.values()) == rows
    buckets = {k: v.value for k, v in scores.items() if k.startswith("score_")
               and k != "score_policy"}
    assert "score_90_100" in buckets and "score_unscored" in buckets
    assert sum(buckets.values()) == rows

    vt = events["virustotal_lookups"]
    for key in ("calls", "http_requests", "cache_hits", "latency_p50_ms", "status_ok"):
        assert isinstance(vt[key], dg.IntMetadataValue | dg.FloatMetadataValue), key
    assert vt["calls"].value > 0


def test_score_lineage_reaches_typed_lookup_columns_and_covers_what_scoring_reads(materialized):
    from cti_assets.scoring.lineage import _recorder
    from cti_assets.scoring.model import score_frame
    from cti_assets.storage.outputs import read_partition

    result, _ = materialized
    events = materializations(result)
    lineage = events["observable_scores"]["dagster/column_lineage"].value.deps_by_column
    merged_lineage = events["merged_enrichment"]["dagster/column_lineage"].value.deps_by_column
    assert {"score", "confidence", "verdict", "final_score"} <= set(lineage)

    def upstream(column: str) -> set[tuple[str, str]]:
        return {(d.asset_key.to_user_string(), d.column_name) for d in lineage[column]}

    score_deps = upstream("score")
    assert ("merged_enrichment", "virustotal__malicious") in score_deps
    assert ("threat_context", "n_known_links") in score_deps
    via = {(d.asset_key.to_user_string(), d.column_name)
           for d in merged_lineage["virustotal__malicious"]}
    assert via == {("virustotal_lookups", "virustotal__malicious")}

    # what score_frame really reads of the day's merged table is in the published lineage
    merged = read_partition("merged_enrichment", DAY)
    recorder = _recorder(merged)
    score_frame(recorder, read_partition("threat_context", DAY))
    published = {name for column in lineage for asset, name in upstream(column)
                 if asset == "merged_enrichment"} | {"stix_id"}
    assert set(recorder.reads) - published == set()
    assert isinstance(events["observable_scores"]["verdict_malicious"], dg.IntMetadataValue)
    assert pd.notna(merged["virustotal__malicious"]).any()
