"""score_frame over 100k synthetic rows: correct and consistent with row-by-row scoring.
(Timing is measured outside the tests; here only correctness is asserted.)"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cti_assets.providers.fields import PROVIDER_FIELDS, column, is_list
from cti_assets.scoring.components import parse_components
from cti_assets.scoring.model import score_frame
from cti_assets.scoring.policy import apply_score_policy
from cti_assets.scoring.weights import ScoringWeights

N_ROWS = 100_000
W = ScoringWeights()


def _wide_frame(n_rows: int, seed: int = 11) -> pd.DataFrame:
    """A merged frame built column-wise (as merge_lookups would emit it), for VirusTotal,
    AbuseIPDB and GreyNoise over IPv4 observables."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {
        "stix_id": [f"ipv4-addr--{i:08d}" for i in range(n_rows)],
        "internal_id": [f"id-{i}" for i in range(n_rows)],
        "entity_type": "IPv4-Addr",
        "normalized_value": [f"198.18.{(i // 256) % 256}.{i % 256}" for i in range(n_rows)],
        "tlp": "TLP:CLEAR",
        "existing_score": pd.array(rng.choice([None, 20, 90], n_rows), dtype="Int64"),
        "status": np.where(rng.random(n_rows) < 0.01, "rejected", "ok"),
        "reason": None,
    }
    for provider in ("virustotal", "abuseipdb", "greynoise"):
        statuses = rng.choice(["ok", "ok", "ok", "not_found", "error", "deferred"], n_rows)
        data[column(provider, "status")] = pd.array(statuses, dtype="string")
        data[column(provider, "reason")] = pd.array([None] * n_rows, dtype="string")
        data[column(provider, "raw_digest")] = pd.array(
            [f"{i:064x}" for i in range(n_rows)], dtype="string")
        for name, dtype in PROVIDER_FIELDS[provider].items():
            data[column(provider, name)] = pd.array([None] * n_rows, dtype=(
                object if is_list(dtype) else dtype))
    data[column("virustotal", "malicious")] = pd.array(rng.poisson(1.5, n_rows), dtype="Int64")
    data[column("virustotal", "undetected")] = pd.array([60] * n_rows, dtype="Int64")
    data[column("virustotal", "harmless")] = pd.array(rng.integers(0, 20, n_rows), dtype="Int64")
    data[column("abuseipdb", "abuse_confidence_score")] = pd.array(
        rng.integers(0, 101, n_rows) * (rng.random(n_rows) < 0.3), dtype="Int64")
    data[column("abuseipdb", "is_whitelisted")] = pd.array(rng.random(n_rows) < 0.02,
                                                           dtype="boolean")
    data[column("greynoise", "classification")] = pd.array(
        rng.choice(["malicious", "benign", "unknown", "suspicious"], n_rows), dtype="string")
    return pd.DataFrame(data)


def test_one_hundred_thousand_rows_score_consistently():
    merged = _wide_frame(N_ROWS)
    scores = score_frame(merged)
    assert len(scores) == N_ROWS
    assert list(scores["stix_id"]) == list(merged["stix_id"])
    ok = (merged["status"] == "ok").to_numpy()
    assert scores["score"][ok].notna().all() and scores["score"][~ok].isna().all()
    values = scores["score"][ok].astype(int)
    assert values.between(0, 100).all()
    malicious = scores["verdict"][ok] == "malicious"
    assert (malicious == (values >= W.malicious_threshold)).all()
    assert scores["confidence"].between(0, 100).all()

    sample = np.random.default_rng(5).choice(N_ROWS, 25, replace=False)
    one_by_one = pd.concat([score_frame(merged.iloc[[i]]) for i in sample], ignore_index=True)
    pd.testing.assert_frame_equal(scores.iloc[sample].reset_index(drop=True), one_by_one)
    for i in sample:
        items = parse_components(scores["components"].iloc[i])
        if ok[i] and "capped" not in scores["explanation"].iloc[i]:
            total = sum(item["contribution"] for item in items)
            assert abs(total - scores["score"].iloc[i]) <= 1

    final = apply_score_policy(scores)
    existing = final["existing_score"].notna() & final["final_score"].notna()
    assert (final["final_score"][existing] >= final["existing_score"][existing]).all()
