"""The scoring model: one explainable 0-100 score, confidence and verdict per observable.

Why it exists: each anchor connector writes its own number (a VirusTotal 6 replaced an
AbuseIPDB 100; one engine in seventy made an IP "malicious"; Shodan is always 50). Here every
provider signal is an evidence rule; rules are evaluated as column operations over the whole
merged frame; a provider's signals combine into one capped witness, witnesses combine by
noisy-OR (independent sources corroborate, none can lower another), threat links nudge, benign
or shared-infrastructure context caps unless two independent witnesses overrule it, and every
item is written down in `components` (largest contribution first) and in one sentence in
`explanation`.

Formula (docs/scoring.md has the table of rules and a worked example):
    h_i = -ln(1 - p_i); per witness w: p_w = min(witness_max_w, 1 - exp(-sum h_i)),
    H_w = -ln(1 - p_w); base = 100 * (1 - exp(-sum H_w))
    contribution_i = base * H_w / sum H * h_i / sum_w h  (so contributions add up to base)
    pre_cap = min(100, base + min(link_max_points, link points))
    score = pre_cap if (>= 2 witnesses claim >= lift_min_p and base >= benign_override_score)
            else min(pre_cap, lowest cap)
    confidence = coverage (share of provider reliability answered) x support (witnesses
                 agreeing behind the verdict, lowered on conflict)
Not found, skipped, errors and deferred lookups never add evidence; they lower confidence.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cti_assets.providers.base import (
    NOT_FOUND,
    OK,
    SKIP_OUT_OF_SCOPE,
    SKIP_SPECIAL_USE,
    SKIPPED,
    VIRUSTOTAL,
)
from cti_assets.providers.fields import column
from cti_assets.scoring import rules, text
from cti_assets.scoring.components import COMPONENT_TYPE
from cti_assets.scoring.policy import scores_as_int64
from cti_assets.scoring.rules import BENIGN_KIND, CAP_KINDS, LABEL_KIND, MALICIOUS_KIND, Hit
from cti_assets.scoring.view import View
from cti_assets.scoring.weights import ScoringWeights
from cti_assets.tables import SCORE_COLUMNS

MALICIOUS, SUSPICIOUS, BENIGN, UNKNOWN = "malicious", "suspicious", "benign", "unknown"
VERDICTS = (MALICIOUS, SUSPICIOUS, BENIGN, UNKNOWN)
THREAT_LINK_RULE = "threat_link"
# Version of the scoring model: rules, default weights, formula and texts. Bump it with any
# change that can alter a score, confidence, verdict or explanation; it is observable_scores'
# code_version, so the Dagster UI marks every day scored by an older model as stale.
MODEL_VERSION = "2026.11.1"
# Highest probability one item may claim, so that -ln(1 - p) stays finite.
_P_MAX = 0.999


def score_frame(
    merged: pd.DataFrame,
    context: pd.DataFrame | None = None,
    weights: ScoringWeights | None = None,
) -> pd.DataFrame:
    """Score every merged row (rejected observables get a null score and verdict unknown)."""
    weights = weights or ScoringWeights()
    view = View(merged)
    hits = rules.evaluate(view, weights)
    n_rows = view.size
    base, hazard, witnesses, shares = _witnesses(hits, n_rows, weights)
    known, named, summary = _links(view, context)
    bonus = np.minimum(
        weights.link_max_points,
        weights.link_known_points * known + weights.link_provider_name_points * named,
    )
    bonus[~view.scored] = 0
    pre_cap = np.minimum(100.0, base + bonus)
    cap, cap_hit = _caps(hits, n_rows)
    lifted = (witnesses >= weights.lift_min_witnesses) & (
        np.floor(base + 0.5) >= weights.benign_override_score)  # as the rounded score
    capped = ~np.isinf(cap) & ~lifted & (cap < pre_cap)
    final = np.where(capped, cap, pre_cap)
    contributions = _contributions(hits, base, shares, final - pre_cap, capped, cap_hit)
    link_contribution = pre_cap - np.minimum(100.0, base)
    # Arrow's string kernels release the GIL: the big text columns build while the rest is
    # computed.
    with ThreadPoolExecutor(max_workers=2) as pool:
        components = pool.submit(
            _components, view, hits, contributions, link_contribution, summary
        )
        score = np.floor(final + 0.5)
        vouchers = _vouchers(hits, n_rows)
        conflict = (vouchers > 0) | ~np.isinf(cap)
        support = _support(score, witnesses, vouchers, conflict & (witnesses > 0), weights)
        support[view.special_use()] = 1.0  # never looked up, and certainly not a threat
        confidence = np.floor(_confidence(view, weights) * support + 0.5)
        verdict = _verdicts(score, confidence, vouchers > 0, view.scored, weights)
        explanation = pool.submit(
            _explanations, view, hits, capped, cap_hit, link_contribution, summary,
            score, confidence, verdict,
        )
        columns = _unscored_columns(view, summary)
        components, explanation = components.result(), explanation.result()
    score_values = scores_as_int64(score, ~view.scored)
    return _output(columns, score_values, confidence, verdict, components, explanation)


def _links(view: View, context: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_rows = view.size
    summary = np.full(n_rows, None, dtype=object)
    if context is None or context.empty:
        return np.zeros(n_rows), np.zeros(n_rows), summary
    position = _align(view.stix_ids, context["stix_id"])
    found = position >= 0

    def gather(name: str) -> np.ndarray:
        values = np.zeros(n_rows)
        if name in context.columns:
            source = pd.to_numeric(context[name], errors="coerce").fillna(0).to_numpy(float)
            values[found] = source[position[found]]
        return values

    total = sum(gather(name) for name in
                ("n_threat_actors", "n_intrusion_sets", "n_campaigns", "n_malware"))
    known = np.minimum(gather("n_known_links"), total)
    if "link_summary" in context.columns:
        texts = context["link_summary"].astype(object).to_numpy()
        summary[found] = texts[position[found]]
        summary[pd.isna(summary)] = None
    return known, total - known, summary


def _align(stix_ids: pa.Array, other: pd.Series) -> np.ndarray:
    """Row of `other` holding each stix_id (-1 when absent); no hashing when the orders match."""
    other_ids = pa.array(other, from_pandas=True)
    if isinstance(other_ids, pa.ChunkedArray):
        other_ids = other_ids.combine_chunks()
    other_ids = other_ids.cast(stix_ids.type)
    if len(other_ids) == len(stix_ids) and pc.all(pc.equal(stix_ids, other_ids)).as_py():
        return np.arange(len(stix_ids))
    return pc.index_in(stix_ids, value_set=other_ids).fill_null(-1).to_numpy(
        zero_copy_only=False)


def _witnesses(hits: list[Hit], n_rows: int, weights: ScoringWeights,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Noisy-OR within each witness (a provider's signals, capped at its witness_max), then
    across witnesses. Returns base (0-100), total hazard, the witnesses claiming at least
    lift_min_p per row, and per malicious hit its share of the total hazard per fired row."""
    raw: dict[str, np.ndarray] = {}
    items: dict[int, np.ndarray] = {}
    for index, hit in enumerate(hits):
        if hit.kind == MALICIOUS_KIND:
            items[index] = -np.log1p(-np.minimum(hit.amount, _P_MAX))
            raw.setdefault(hit.witness, np.zeros(n_rows))[hit.rows] += items[index]
    hazard = np.zeros(n_rows)
    claimed: dict[str, np.ndarray] = {}
    witnesses = np.zeros(n_rows, dtype=np.int64)
    for name, own in raw.items():
        p = np.minimum(-np.expm1(-own), weights.witness_max.get(name, 1.0))
        claimed[name] = -np.log1p(-np.minimum(p, _P_MAX))
        hazard += claimed[name]
        witnesses += p >= weights.lift_min_p
    shares = {}
    for index, item in items.items():
        hit = hits[index]
        own = raw[hit.witness][hit.rows]
        shares[index] = (claimed[hit.witness][hit.rows] / np.where(hazard[hit.rows] > 0,
                                                                    hazard[hit.rows], 1)
                         * item / np.where(own > 0, own, 1))
    return -100.0 * np.expm1(-hazard), hazard, witnesses, shares


def _vouchers(hits: list[Hit], n_rows: int) -> np.ndarray:
    """Distinct providers vouching for each row (benign rules; shared infrastructure is not)."""
    seen: dict[str, np.ndarray] = {}
    for hit in hits:
        if hit.kind == BENIGN_KIND:
            seen.setdefault(hit.provider, np.zeros(n_rows, dtype=bool))[hit.rows] = True
    return sum((mask.astype(np.int64) for mask in seen.values()), np.zeros(n_rows, np.int64))


def _support(score: np.ndarray, witnesses: np.ndarray, vouchers: np.ndarray,
             conflict: np.ndarray, weights: ScoringWeights) -> np.ndarray:
    """Share of the coverage that counts: by the independent witnesses behind the verdict
    (malicious ones for a score in the suspicious band or above, vouching ones below),
    lowered where malicious and benign evidence meet."""
    table = np.asarray(weights.support_by_witnesses, dtype=float)
    behind = np.where(score >= weights.suspicious_threshold, witnesses, vouchers)
    support = table[np.minimum(behind, table.size - 1)]
    return np.where(conflict, support * weights.conflict_factor, support)


def _caps(hits: list[Hit], n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Lowest cap (benign or shared infrastructure) per row, and which hit sets it."""
    cap = np.full(n_rows, np.inf)
    cap_hit = np.full(n_rows, -1)
    for index, hit in enumerate(hits):
        if hit.kind not in CAP_KINDS:
            continue
        lower = hit.amount < cap[hit.rows]
        cap[hit.rows[lower]] = hit.amount[lower]
        cap_hit[hit.rows[lower]] = index
    return cap, cap_hit


def _confidence(view: View, weights: ScoringWeights) -> np.ndarray:
    """Share of the reliability of in-scope providers (present in the frame) that answered."""
    answered = np.zeros(view.size)
    possible = np.zeros(view.size)
    for provider in view.providers:
        reliability = float(weights.provider_reliability.get(provider, 0))
        status, reason = column(provider, "status"), column(provider, "reason")
        skipped = view.equals(status, SKIPPED)
        counted = view.in_scope(provider) & ~(skipped & view.equals(reason, SKIP_OUT_OF_SCOPE))
        credit = np.select(
            [view.equals(status, OK), view.equals(status, NOT_FOUND),
             skipped & view.equals(reason, SKIP_SPECIAL_USE)],
            [1.0, weights.not_found_credit, 1.0],
            0.0,
        )
        if provider == VIRUSTOTAL:
            credit = np.where(rules.vt_stale(view, weights), weights.stale_credit, credit)
        answered += reliability * credit * counted
        possible += reliability * counted
    confidence = np.divide(100.0 * answered, possible, out=np.zeros(view.size), where=possible > 0)
    confidence[~view.scored] = 0
    return confidence


def _verdicts(score: np.ndarray, confidence: np.ndarray, benign_evidence: np.ndarray,
              scored: np.ndarray, weights: ScoringWeights) -> np.ndarray:
    verdict = np.select(
        [
            score >= weights.malicious_threshold,
            (score >= weights.suspicious_threshold) & (confidence >= weights.min_confidence),
            benign_evidence & (score <= weights.benign_max_score),
        ],
        [MALICIOUS, SUSPICIOUS, BENIGN],
        UNKNOWN,
    ).astype(object)
    verdict[~scored] = UNKNOWN
    return verdict


def _contributions(hits: list[Hit], base: np.ndarray, shares: dict[int, np.ndarray],
                   cap_delta: np.ndarray,
                   capped: np.ndarray, cap_hit: np.ndarray) -> list[np.ndarray]:
    """Score points per hit row: malicious items share `base` by their share of the hazard;
    the binding cap carries the (negative) points it removed; other items 0."""
    out = []
    for index, hit in enumerate(hits):
        rows = hit.rows
        if hit.kind == MALICIOUS_KIND:
            out.append(base[rows] * shares[index])
        else:
            binding = capped[rows] & (cap_hit[rows] == index)
            out.append(np.where(binding, cap_delta[rows], 0.0))
    return out


def _components(view: View, hits: list[Hit], contributions: list[np.ndarray],
                link_contribution: np.ndarray, summary: np.ndarray) -> pa.ListArray:
    """Per row, its evidence items (COMPONENT_TYPE), largest contribution first (ties in rule
    order, the threat link after the rules). Built column by column from the hits, with no
    text per item: at a million rows the items are millions, and as JSON text they were most
    of the scores' bytes."""
    link_rows = np.flatnonzero(link_contribution > 0)
    links = [link_rows] if link_rows.size else []
    parts = [hit.rows for hit in hits] + links
    slots = text.layout(view.size, parts)
    item = slots.part < len(parts)  # the slot of a row without items holds none
    source, part, row = slots.source[item], slots.part[item], slots.row[item]
    offsets = slots.offsets - np.searchsorted(slots.bare, np.arange(view.size + 1))
    amounts = np.concatenate([*contributions, *(link_contribution[r] for r in links),
                              np.zeros(0)])
    order = _item_order(row, amounts[source])
    source, part, row = source[order], part[order], row[order]
    labels = [(hit.rule, hit.provider, hit.field) for hit in hits]
    labels += [(THREAT_LINK_RULE, "threat_context", "links")] * len(links)
    names = np.array(labels, dtype=object).reshape(-1, 3)
    rule, provider, field_name = (pa.array(names[:, k], pa.string()).take(pa.array(part))
                                  for k in range(3))
    values = pa.concat_arrays([hit.value.cast(pa.string()) for hit in hits]
                              + [text.json_text(summary[r]).cast(pa.string()) for r in links]
                              + [pa.nulls(0, pa.string())])
    items = pa.StructArray.from_arrays(
        [rule, provider, field_name, values.take(pa.array(source)),
         pa.array(np.round(amounts[source], 1) + 0.0), _digests(view, hits, part, row)],
        fields=list(COMPONENT_TYPE.value_type))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), items, type=COMPONENT_TYPE)


def _item_order(row: np.ndarray, amounts: np.ndarray) -> np.ndarray:
    """Items laid out row after row, reordered by (row, -contribution rounded to 0.1), ties in
    their order: one stable sort of a single integer key (row, then tenths of a point) costs a
    fifth of the two-key lexsort it replaces."""
    tenths = np.rint(amounts * 10)
    if row.size and not (np.isfinite(tenths).all() and np.abs(tenths).max() < 2**15
                         and row.max() < 2**47):
        return np.lexsort((-np.round(amounts, 1), row))
    return np.argsort(row.astype(np.int64) * 2**16 - tenths.astype(np.int64), kind="stable")


def _digests(view: View, hits: list[Hit], part: np.ndarray, row: np.ndarray) -> pa.Array:
    """The raw_digest of the hit provider's answer per item (null for the threat link)."""
    providers = list(dict.fromkeys(hit.provider for hit in hits))
    column_of_part = np.array([providers.index(hit.provider) for hit in hits] + [-1])
    column_of = column_of_part[np.minimum(part, len(hits))]
    # One array, not chunks: a take from chunks costs more and hands back chunks to join.
    stored = pa.concat_arrays(
        [chunk.cast(pa.string()) for p in providers
         for chunk in view.chunks(column(p, "raw_digest"))] or [pa.nulls(0, pa.string())])
    return stored.take(pa.array(column_of * view.size + row, mask=column_of < 0))


def _explanations(
    view: View, hits: list[Hit], capped: np.ndarray, cap_hit: np.ndarray,
    link_contribution: np.ndarray, summary: np.ndarray, score: np.ndarray,
    confidence: np.ndarray, verdict: np.ndarray,
) -> pa.Array:
    """"<verdict> (<score>/100, confidence <c>): <phrase>; <phrase>; not answered: <gaps>"."""
    gaps = view.gaps()
    parts: list[tuple[np.ndarray, object]] = []
    for hit in hits:
        if hit.kind == MALICIOUS_KIND:
            parts.append((hit.rows, hit.phrase))
    link_rows = np.flatnonzero(link_contribution > 0)
    if link_rows.size:
        parts.append((link_rows, lambda: text.cat("linked to ", summary[link_rows].astype(str))))
    for index, hit in enumerate(hits):
        if hit.kind in CAP_KINDS:
            # The binding and the other rows as two parts side by side: each row is in one, so
            # its texts keep their order, and each text is built only for the rows that show it.
            binding = capped[hit.rows] & (cap_hit[hit.rows] == index)
            note = " (benign)" if hit.kind == BENIGN_KIND else " (shared infrastructure)"
            parts.append((hit.rows[binding], lambda hit=hit, binding=binding: text.cat(
                "capped at ", text.ints(hit.amount[binding]), " by ",
                hit.phrase.filter(pa.array(binding)))))
            parts.append((hit.rows[~binding], lambda hit=hit, binding=binding, note=note: text.cat(
                hit.phrase.filter(pa.array(~binding)), note)))
    for hit in hits:
        if hit.kind == LABEL_KIND:
            parts.append((hit.rows, lambda hit=hit: text.cat("label: ", hit.phrase)))
    has_gaps = pc.not_equal(gaps, pa.scalar("", text.LARGE)).to_numpy(zero_copy_only=False)
    gap_rows = np.flatnonzero(has_gaps & view.scored)
    scored = np.flatnonzero(view.scored)
    has_evidence = np.zeros(view.size, dtype=bool)
    for part_rows, _ in parts:
        has_evidence[part_rows] = True
    bare = np.flatnonzero(view.scored & ~has_evidence)
    rejected = np.flatnonzero(~view.scored)
    # Every scored row starts with its head (then, without evidence, a note that it has none);
    # rejected rows are only their rejection sentence.
    rows = [scored, bare] + [r for r, _ in parts] + [gap_rows, rejected]

    def build(index: int, position: np.ndarray, last: np.ndarray) -> pa.Array:
        if index == 0:
            return text.cat(text.labels(verdict[scored]), " (", text.ints(score[scored]),
                            "/100, confidence ", text.ints(confidence[scored]), "): ")
        if index == 1:
            return text.const("no malicious or benign evidence", bare.size)
        if index == len(rows) - 1:
            return text.cat("unknown (no score): ", view.unscored_sentences(rejected))
        if index == len(rows) - 2:
            return text.cat("; not answered: ", gaps.take(pa.array(gap_rows)))
        separator = text.where(position == 1, "", "; ")  # nothing right after the head
        source = parts[index - 2][1]
        return text.cat(separator, source() if callable(source) else source)

    return text.join_rows(view.size, rows, build, "")


def _unscored_columns(
    view: View, summary: np.ndarray
) -> dict[str, pd.api.extensions.ExtensionArray]:
    """The output columns that do not depend on the score (built while the texts are)."""
    frame = view.frame
    n_rows = view.size

    def passthrough(name: str, dtype: str) -> pd.api.extensions.ExtensionArray:
        if dtype == "string":  # Arrow-backed, as read: no copy into Python strings
            dtype = pd.StringDtype("pyarrow")
        if name in frame.columns:
            return frame[name].astype(dtype).array
        return pd.array([None] * n_rows, dtype=dtype)

    columns = {
        "stix_id": passthrough("stix_id", "string"),
        "internal_id": passthrough("internal_id", "string"),
        "entity_type": passthrough("entity_type", "string"),
        "normalized_value": passthrough("normalized_value", "string"),
        "observable_status": passthrough("status", "string"),
        "tlp": passthrough("tlp", "string"),
        "existing_score": passthrough("existing_score", "Int64"),
        "special_use": pd.array(view.special_use(), dtype="boolean"),
        "linked": pd.array(summary != None, dtype="boolean"),  # noqa: E711 (elementwise)
        "link_summary": pd.array(summary, dtype="string"),
        "provider_status": text.to_pandas(view.status_json()),
    }
    if "existing_confidence" in frame.columns:
        columns["existing_confidence"] = frame["existing_confidence"].astype("Int64").array
    return columns


def _output(columns: dict[str, pd.api.extensions.ExtensionArray],
            score: pd.api.extensions.ExtensionArray, confidence: np.ndarray,
            verdict: np.ndarray, components: pa.ListArray, explanation: pa.Array,
            ) -> pd.DataFrame:
    scored = {
        "score": score,
        "confidence": scores_as_int64(confidence),
        "verdict": text.to_pandas(text.labels(verdict)),
        "components": pd.arrays.ArrowExtensionArray(components),
        "explanation": text.to_pandas(explanation),
    }
    names = [*SCORE_COLUMNS, *(["existing_confidence"] if "existing_confidence" in columns else [])]
    return pd.DataFrame({name: scored[name] if name in scored else columns[name] for name in names})
