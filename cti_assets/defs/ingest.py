"""The `observables` asset: every observable created in the partition's window, validated.

Nothing is dropped here: an invalid value is kept with status `rejected` and its reason, so it
shows up in every downstream table and in the counts.
"""

import dagster as dg
import pandas as pd

from cti_assets.defs.metadata import numeric, owners, row_count, schema_metadata, tags
from cti_assets.defs.partitions import daily_partitions, partition_window
from cti_assets.defs.resources import SourceResource
from cti_assets.sources.base import SourceError
from cti_assets.tables import OBSERVABLE_OK


@dg.asset(
    partitions_def=daily_partitions,
    group_name="ingest",
    kinds={"python", "stix"},
    code_version="1",
    owners=owners("ingest"), tags=tags("ingest"),
    metadata=schema_metadata("observables"),
)
def observables(context: dg.AssetExecutionContext, source: SourceResource) -> pd.DataFrame:
    """Observables the source created in [day 00:00, next day 00:00) UTC, one row each, with
    type, raw and normalised value, TLP, existing score, labels and a status (ok / rejected)."""
    from cti_assets.intake.observables import (
        STRICTER_COPY,
        counts_by_type_and_status,
        observables_frame,
        record_keys,
        with_strictest_tlp_per_value,
    )

    start, end = partition_window(context.partition_key)
    try:
        cti_source = source.get()
        cti_source.check()
        records = cti_source.observables_created_between(start, end)
        frame = observables_frame(records)
        ok = (frame["status"] == OBSERVABLE_OK).to_numpy()
        row_keys = [record_keys(record) if ok[i] else set() for i, record in enumerate(records)]
        copies = cti_source.copies_of(set().union(*row_keys), known=set(frame["stix_id"]))
    except SourceError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    frame = with_strictest_tlp_per_value(frame, row_keys, copies)
    counts = counts_by_type_and_status(frame)
    context.add_output_metadata(
        {
            **row_count(len(frame)),
            "window": f"[{start.isoformat()}, {end.isoformat()})",
            "source": cti_source.name,
            "counts": dg.MetadataValue.json(counts),
            **numeric("status_", frame["status"].value_counts().to_dict()),
            "rejected": int((frame["status"] == "rejected").sum()),
            "tlp_raised_by_copies": int(
                frame["tlp_reason"].fillna("").str.startswith(STRICTER_COPY).sum()),
        }
    )
    return frame
