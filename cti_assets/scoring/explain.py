"""Explanations for people: a score's whole derivation, top tables, histograms, lineage.

`explain_text` is what `cti-assets explain <value>` prints: verdict, score and confidence,
every evidence item with the provider field and value behind it, what each provider did
(including not found, skipped, deferred and errors), threat links, the write-back policy and,
when the raw bodies are at hand, an excerpt of each provider's answer with its digest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cti_assets.providers.fields import PROVIDER_FIELDS
from cti_assets.scoring.components import parse_components
from cti_assets.scoring.model import THREAT_LINK_RULE, VERDICTS
from cti_assets.scoring.view import PROVIDER_LABELS

EXCERPT_CHARS = 400
HISTOGRAM_BUCKETS = tuple(f"{low}-{low + 9 if low < 90 else 100}" for low in range(0, 100, 10))
UNSCORED = "unscored"


def explain_text(
    score_row: Mapping[str, Any] | pd.Series,
    lookups: dict[str, dict] | None = None,
    raw_bodies: dict[str, bytes] | None = None,
) -> str:
    """The derivation of one score as plain text lines.

    `lookups` maps provider -> its lookup row (status, reason, fields, raw_digest...);
    `raw_bodies` maps provider or raw digest -> the raw response body.
    """
    row = dict(score_row)
    lines = [_headline(row)]
    if _present(row.get("tlp_reason")):
        lines.append(f"  TLP: {row.get('tlp')} ({row['tlp_reason']})")
    if _present(row.get("explanation")):
        lines.append(f"  {row['explanation']}")
    lines.append("")
    lines.append("Evidence (contribution in score points):")
    items = parse_components(row.get("components"))
    if not items:
        lines.append("  none")
    for item in sorted(items, key=lambda i: (-abs(float(i.get("contribution") or 0)),
                                             str(i.get("rule")))):
        provider = item.get("provider")
        label = PROVIDER_LABELS.get(provider, provider) if provider else provider
        lines.append(
            f"  {float(item.get('contribution') or 0):+6.1f}  {item.get('rule')}: "
            f"{label} {item.get('field')} = {json.dumps(item.get('value'))}"
            + (f"  [raw {str(item['raw_digest'])[:12]}]" if item.get("raw_digest") else "")
        )
    lines.append("")
    lines.append("Providers:")
    lines.extend(_provider_lines(row, lookups or {}))
    lines.append("")
    lines.append("Threat links:")
    lines.extend(_link_lines(row))
    if _present(row.get("policy_action")):
        lines.append("")
        decided = (f"{row['policy_action']} (existing score {_show(row.get('existing_score'))}, "
                   f"final score {_show(row.get('final_score'))})")
        status = row.get("writeback_status")
        if _present(status) and status not in ("written", "dry_run"):
            reason = f", {row['writeback_reason']}" if _present(row.get("writeback_reason")) else ""
            lines.append(f"Write-back: {status}{reason}: nothing written (scored {decided})")
        else:
            lines.append(f"Write-back: {decided}")
    if raw_bodies:
        lines.append("")
        lines.append("Raw answers:")
        lines.extend(_raw_lines(row, lookups or {}, raw_bodies, items))
    return "\n".join(lines)


def top_table_markdown(scores: pd.DataFrame, n: int = 10) -> str:
    """The n highest scores as a Markdown table (ties by value, for a stable order)."""
    if scores.empty:
        return "_no scored observables_"
    scored = scores[scores["score"].notna()].copy()
    scored["_value"] = scored["normalized_value"].astype(str)
    top = scored.sort_values(["score", "_value"], ascending=[False, True]).head(n)
    header = (
        "| # | value | type | score | confidence | verdict | why |\n"
        "|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {rank} | {_cell(r['normalized_value'])} | {_cell(r['entity_type'])} | "
        f"{_show(r['score'])} | {_show(r['confidence'])} | {_cell(r['verdict'])} | "
        f"{_cell(_why(r.get('explanation')))} |"
        for rank, (_, r) in enumerate(top.iterrows(), start=1)
    ]
    return "\n".join([header, *rows])


def histogram(scores: pd.DataFrame) -> dict[str, int]:
    """Counts per 10-point bucket ("0-9" ... "90-100") plus "unscored" (null scores)."""
    values = pd.to_numeric(scores["score"], errors="coerce").to_numpy(float, na_value=np.nan)
    present = values[~np.isnan(values)]
    buckets = np.minimum(present // 10, 9).astype(int)
    counts = np.bincount(buckets, minlength=10)
    out = {label: int(count) for label, count in zip(HISTOGRAM_BUCKETS, counts, strict=True)}
    out[UNSCORED] = int(np.isnan(values).sum())
    return out


def verdict_counts(scores: pd.DataFrame) -> dict[str, int]:
    """Rows per verdict, every verdict present (0 when none)."""
    counts = scores["verdict"].value_counts()
    return {verdict: int(counts.get(verdict, 0)) for verdict in VERDICTS}


def _headline(row: dict) -> str:
    value = next((row[k] for k in ("normalized_value", "value", "stix_id") if _present(row.get(k))),
                 "?")
    if not _present(row.get("score")):
        return f"{value} ({row.get('entity_type')}, {row.get('stix_id')}): no score"
    return (
        f"{value} ({row.get('entity_type')}, {row.get('stix_id')}): "
        f"{row.get('verdict')} — score {_show(row.get('score'))}/100, "
        f"confidence {_show(row.get('confidence'))}"
    )


def _provider_lines(row: dict, lookups: dict[str, dict]) -> list[str]:
    statuses: dict[str, str] = {}
    if _present(row.get("provider_status")):
        statuses.update(json.loads(row["provider_status"]))
    for provider, lookup in lookups.items():
        status = lookup.get("status")
        reason = lookup.get("reason")
        statuses[provider] = f"{status}:{reason}" if _present(reason) else str(status)
    if not statuses:
        return ["  no provider information"]
    lines = []
    for provider, status in statuses.items():
        label = PROVIDER_LABELS.get(provider, provider)
        detail = lookups.get(provider, {}).get("message")
        lines.append(f"  {label:<18} {status}" + (f" ({detail})" if _present(detail) else ""))
    return lines


def _link_lines(row: dict) -> list[str]:
    if _present(row.get("links")):
        links = json.loads(row["links"])
        if links:
            return [
                f"  {link['entity_type']} {link['name']} via {link['via']}"
                + (f" ({link['relationship_type']})" if link.get("relationship_type") else "")
                + (f", indicator {link['indicator_id']}" if link.get("indicator_id") else "")
                + (f", reported by {link['provider']} as {link['reported_name']!r}"
                   if link.get("provider") else "")
                for link in links
            ]
    if _present(row.get("link_summary")):
        return [f"  {row['link_summary']}"]
    return ["  none"]


def _raw_lines(row: dict, lookups: dict[str, dict], raw_bodies: dict[str, bytes],
               items: list[dict]) -> list[str]:
    digests: dict[str, str] = {}
    for item in items:
        if item.get("raw_digest") and item.get("rule") != THREAT_LINK_RULE:
            digests.setdefault(item["provider"], item["raw_digest"])
    for provider, lookup in lookups.items():
        if lookup.get("raw_digest"):
            digests.setdefault(provider, lookup["raw_digest"])
    lines = []
    for key in sorted(set(digests) | {k for k in raw_bodies if k in PROVIDER_FIELDS}):
        digest = digests.get(key)
        body = raw_bodies.get(key) or (raw_bodies.get(digest) if digest else None)
        if body is None:
            continue
        excerpt = body[:EXCERPT_CHARS].decode("utf-8", errors="replace")
        more = "…" if len(body) > EXCERPT_CHARS else ""
        lines.append(f"  {PROVIDER_LABELS.get(key, key)} raw {digest or 'digest unknown'}:")
        lines.append(f"    {excerpt}{more}")
    return lines or ["  none available"]


def _why(explanation: Any) -> str:
    if not _present(explanation):
        return ""
    text = str(explanation)
    return text.split(": ", 1)[1] if ": " in text else text


def _cell(value: Any) -> str:
    if not _present(value):
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _show(value: Any) -> str:
    return "none" if not _present(value) else str(int(value)) if _is_number(value) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _present(value: Any) -> bool:
    if value is None:
        return False
    try:
        return not bool(pd.isna(value))
    except (TypeError, ValueError):
        return True
