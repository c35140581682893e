"""Name knowledge shipped with the package (cti_assets/data): which names and addresses are
well-known infrastructure, whether a label reads like ordinary words, and which popular name a
label imitates.

Why here: the offline network context computes the per-name features once per lookup (cached),
so re-scoring a million rows only reads columns; scoring reads the same lists for its
infrastructure rules. The bigram model replaces a bare entropy threshold, which called
ordinary compound names (stackoverflow, cloudflare-dns) random.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from importlib import resources

_ALPHABET = "abcdefghijklmnopqrstuvwxyz"
_START, _END = "^", "$"


@functools.cache
def infrastructure() -> dict:
    """resolvers, popular_names and shared {"cdn": [...], "cloud": [...]} (infrastructure.json)."""
    return json.loads(_data("infrastructure.json"))


def _data(name: str) -> str:
    return (resources.files("cti_assets") / "data" / name).read_text(encoding="utf-8")


@functools.cache
def _bigram_table() -> dict[tuple[str, str], float]:
    """log10 P(next | previous) over letters and word boundaries, add-one smoothed."""
    lines = [line for line in _data("common_words.txt").splitlines() if not line.startswith("#")]
    words = " ".join(lines).split()
    words += [name.split(".")[0] for name in infrastructure()["popular_names"]]
    pairs: Counter[tuple[str, str]] = Counter()
    for word in words:
        chars = [_START, *re.sub(f"[^{_ALPHABET}]", "", word), _END]
        pairs.update(zip(chars, chars[1:], strict=False))
    following = [*_ALPHABET, _END]
    table = {}
    for previous in [_START, *_ALPHABET]:
        total = sum(pairs[previous, c] for c in following) + len(following)
        for c in following:
            table[previous, c] = math.log10((pairs[previous, c] + 1) / total)
    return table


def bigram_score(label: str) -> float | None:
    """Mean log10 bigram probability of the label's letter runs (digits and hyphens split
    words); ordinary words score about -1.2, random letters below -2. None without letters."""
    table = _bigram_table()
    runs = re.findall(f"[{_ALPHABET}]+", label.lower())
    scores = [table[a, b] for run in runs
              for a, b in zip([_START, *run], [*run, _END], strict=True)]
    return round(sum(scores) / len(scores), 4) if scores else None


@functools.cache
def _brands() -> dict[str, str]:
    """Brand label (at least 5 letters) -> its popular registrable name."""
    brands: dict[str, str] = {}
    for name in infrastructure()["popular_names"]:
        label = name.split(".")[0]
        if len(label) >= 5:
            brands.setdefault(label, name)
    return brands


def lookalike_of(label: str, registrable_domain: str | None) -> str | None:
    """The popular name a registrable label imitates: one or two edits away from a brand
    (typosquat) or carrying the brand as a hyphen-separated word (brand-login-verify), unless
    the name is that popular name itself."""
    if not label or registrable_domain in set(infrastructure()["popular_names"]):
        return None
    brands = _brands()
    for token in label.lower().split("-"):
        if token in brands and token != label:
            return brands[token]
    for brand, name in brands.items():
        if brand != label and abs(len(brand) - len(label)) <= 2 and _within(
                label, brand, 1 if len(brand) < 8 else 2):
            return name
    return None


def _within(a: str, b: str, limit: int) -> bool:
    """Levenshtein distance of a and b at most `limit` (early exit per row)."""
    previous = list(range(len(b) + 1))
    for i, char in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char != other)))
        if min(current) > limit:
            return False
        previous = current
    return previous[-1] <= limit
