"""The README's pictures of the Dagster UI, taken in headless Chromium over real runs.

Why a script rather than hand-made pictures: they must show the UI as it is (every asset of the
graph, the plots of real materialisations, the checks that ran) and be retaken in one command
after a change (`make screenshot`); tests/ui/test_screenshots.py runs it end to end and checks
what each page held before its picture was taken.

What it does: runs the demo (the shipped sample spread over --days consecutive days, ten by
default so that the plots draw a line; against the provider sandbox) in a throw-away data dir
and Dagster home, starts dagster-webserver on 127.0.0.1 over them, and drives
Debian's chromium (apt-get install chromium; never a downloaded browser) with playwright. Every
picture waits for the elements it shows, never for a fixed time.

Dagster OSS 1.13 draws no column lineage (its column links and column graph are Dagster+
features: the OSS build leaves them empty and keeps dagster/column_lineage out of its metadata
tables), so the lineage of `score` is shown where the OSS webserver serves it: its GraphQL
explorer, answering for the latest materialisation.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium's own calls home fail on a closed network and
# it refuses connections; --no-sandbox because the tests may run as root in a container.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SIZE = (1600, 1000)
LOCATION = "cti_assets"  # workspace.yaml
SCORES = "observable_scores"
SENSOR = "new_observables_sensor"
DAYS = 10  # the README's pictures: ten days of the sample at weekday volumes (cli/demo.py)
WAIT_MS = 60_000  # the longest any awaited element may take to appear (a cold webserver)
# The sandbox answers at once: no reason to pace the demo at the real providers' quotas.
FAST_PROVIDERS = {f"{p}_PER_SECOND": "100" for p in (
    "VIRUSTOTAL", "SHODAN", "SHODAN_INTERNETDB", "ABUSEIPDB", "GREYNOISE", "SECURITYTRAILS",
    "URLHAUS", "THREATFOX", "MALWAREBAZAAR", "OTX", "CROWDSEC")}


@dataclass
class Page:
    """What a page held when its picture was taken: its visible text and page-specific facts."""

    text: str
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Shot:
    name: str  # docs/screenshots/<name>.png
    caption: str  # the README's line under the picture
    take: Callable[[Any, str], Page]  # (playwright page, webserver url) -> what it held


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}},
                             timeout=60)
    response.raise_for_status()
    payload = response.json()
    if "errors" in payload:
        raise RuntimeError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


# ---------------------------------------------------------------------------------------------
# The pictures


def _wait_still(page, selector: str) -> None:
    """Wait until the element's transform stops changing (an animated zoom has finished)."""
    page.wait_for_function(
        """(selector) => new Promise((resolve) => {
            let last = null, same = 0;
            const tick = () => {
                const el = document.querySelector(selector);
                const now = el ? getComputedStyle(el).transform : null;
                same = now !== null && now === last ? same + 1 : 0;
                last = now;
                if (same >= 10) resolve(true); else requestAnimationFrame(tick);
            };
            tick();
        })""",
        arg=selector, timeout=WAIT_MS,
    )


def lineage(page, url: str) -> Page:
    """Global asset lineage, every group expanded, laid out top-down and fitted to the window."""
    page.goto(f"{url}/asset-groups")
    page.locator("[class*=CollapsedGroupNode], [class*=GroupNode]").first.wait_for(timeout=WAIT_MS)
    page.keyboard.press("Alt+KeyE")  # the graph's "Expand all groups" (⌥E)
    page.wait_for_url("**expanded=*", timeout=WAIT_MS)
    page.locator("[class*=minimalName], [class*=assetName]").filter(
        has_text="scores").first.wait_for(timeout=WAIT_MS)
    page.locator("button:has([aria-label='panel_show_right'])").click()  # hide the group list
    page.get_by_placeholder("Jump to…").wait_for(state="detached", timeout=WAIT_MS)
    # a double click on the background re-fits the graph to the now wider canvas
    canvas = page.locator("svg").filter(has=page.locator("foreignObject")).first
    box = canvas.locator("xpath=..").bounding_box()
    assert box is not None
    page.mouse.dblclick(box["x"] + 8, box["y"] + box["height"] - 8)
    _wait_still(page, "div:has(> svg foreignObject)")
    labels = page.locator("[class*=minimalName], [class*=assetName]").all_inner_texts()
    edges = page.locator("svg path[d]").count()
    return Page(page.inner_text("body"), {"labels": labels, "edges": edges})


def overview(page, url: str) -> Page:
    """The scores' asset page: status, description, and the column schema from tables.py."""
    page.goto(f"{url}/assets/{SCORES}")
    from cti_assets.schemas import asset_descriptions

    page.get_by_role("cell", name="score", exact=True).wait_for(timeout=WAIT_MS)
    page.get_by_text("Row count").wait_for(timeout=WAIT_MS)
    # the Description column can fill in after the names (a CI run read the page before it)
    page.get_by_text(asset_descriptions(SCORES)["score"], exact=True).first.wait_for(
        timeout=WAIT_MS)
    return Page(page.inner_text("body"))


def plots(page, url: str) -> Page:
    """The scores' numeric metadata plotted over partitions: score buckets and verdict counts."""
    page.goto(f"{url}/assets/{SCORES}")
    page.get_by_role("button", name="Plots").click(timeout=WAIT_MS)
    last = page.get_by_text("verdict_unknown", exact=True)
    last.wait_for(timeout=WAIT_MS)
    page.locator("canvas, svg.recharts-surface").last.wait_for(timeout=WAIT_MS)
    # scroll so that the last rows of plots (the highest score buckets and the verdicts) fill
    # the window under the page header
    page.get_by_text("score_90_100", exact=True).evaluate(
        "e => { e.scrollIntoView({block: 'start'}); }")
    titles = [t for t in page.locator("text=/^(verdict_|score_)/").all_inner_texts()]
    return Page(page.inner_text("body"), {"plot_titles": titles,
                                          "plots": page.locator("canvas").count()})


SCORE_LINEAGE_QUERY = """\
# Where observable_scores.score comes from:
# dagster/column_lineage of the latest
# materialisation; each columnDep is a typed
# column of merged_enrichment. (Dagster OSS
# keeps this entry out of its pages: the
# column lineage view is a Dagster+ feature.)
query ScoreColumnLineage {
  assetNodeOrError(assetKey: {path: ["observable_scores"]}) {
    ... on AssetNode {
      assetMaterializations(limit: 1) {
        partition
        metadataEntries {
          ... on TableColumnLineageMetadataEntry {
            lineage { columnName columnDeps { columnName } }
          }
        }
      }
    }
  }
}
"""


def score_lineage(page, url: str) -> Page:
    """The column lineage of `score` as the webserver serves it, in its GraphQL explorer."""
    query = json.dumps(SCORE_LINEAGE_QUERY)
    page.add_init_script(f"localStorage.setItem('graphiql:query', {query})")
    page.goto(f"{url}/graphql")
    page.locator(".graphiql-execute-button").click(timeout=WAIT_MS)
    result = page.locator(".result-window .CodeMirror")
    result.filter(has_text="columnDeps").wait_for(timeout=WAIT_MS)
    # bring the `score` entry to the top of the answer (CodeMirror draws only what is in view)
    answer = result.evaluate("""(el) => {
        const cm = el.CodeMirror;
        const lines = cm.getValue().split('\\n');
        const at = lines.findIndex((l) => l.includes('"columnName": "score"'));
        if (at > 0) cm.scrollTo(null, cm.heightAtLine(at - 1, 'local'));
        return cm.getValue();
    }""")
    # ... and highlighted (CodeMirror colours the lines it has drawn a moment later)
    page.locator(".result-window .CodeMirror-line").filter(
        has_text='"score"').locator(".cm-property").first.wait_for(timeout=WAIT_MS)
    score_deps = _score_deps(answer)
    return Page(page.inner_text("body"), {"score_deps": score_deps})


def _score_deps(answer: str) -> list[str]:
    data = json.loads(answer)["data"]["assetNodeOrError"]["assetMaterializations"][0]
    for entry in data["metadataEntries"]:
        for item in entry.get("lineage", []):
            if item["columnName"] == "score":
                return [dep["columnName"] for dep in item["columnDeps"]]
    return []


def checks(page, url: str) -> Page:
    """The scores' blocking checks, with their descriptions and latest results."""
    page.goto(f"{url}/assets/{SCORES}?view=checks")
    page.get_by_text("Latest execution").wait_for(timeout=WAIT_MS)
    page.get_by_text("Passed").first.wait_for(timeout=WAIT_MS)
    return Page(page.inner_text("body"))


def sensor(page, url: str) -> Page:
    """The sensor, evaluated from the UI ("Preview tick result": a dry run in the code server,
    nothing launched): the runs it would request for the days that received observables."""
    page.goto(f"{url}/locations/{LOCATION}/sensors/{SENSOR}")
    page.get_by_text("Latest tick").wait_for(timeout=WAIT_MS)
    page.get_by_role("button", name="Preview tick result").click(timeout=WAIT_MS)
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Continue").click(timeout=WAIT_MS)  # with no cursor
    dialog.get_by_text("Requested runs").wait_for(timeout=WAIT_MS)
    return Page(page.inner_text("body"), {"dialog": dialog.inner_text()})


SHOTS = (
    Shot("lineage", "The whole graph, every group expanded: ingest, the cheap lookups, triage, "
         "the expensive lookups, scoring and write-back.", lineage),
    Shot("scores-overview", "observable_scores: row count, checks, owners, and its column schema "
         "with what each column holds (from cti_assets/tables.py).", overview),
    Shot("scores-plots", "observable_scores' numeric metadata plotted across the demo's ten "
         "days: score buckets and verdict counts, fewer observables at the weekend.", plots),
    Shot("score-column-lineage", "The column lineage of `score` (typed columns of "
         "merged_enrichment), as the webserver's GraphQL explorer serves it.", score_lineage),
    Shot("scores-checks", "The four blocking checks on observable_scores, described, with their "
         "latest results.", checks),
    Shot("sensor", "new_observables_sensor evaluated from the UI (Preview tick result, a dry "
         "run): one enrichment run requested per day that received observables.", sensor),
)


def take_screenshots(url: str, out_dir: Path, size: tuple[int, int] = SIZE,
                     shots: tuple[Shot, ...] = SHOTS) -> dict[str, Page]:
    """One PNG per shot in out_dir; what each page held when its picture was taken."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    # the first-visit community dialog would cover the pages
    graphql(url, "mutation { setNuxSeen }")
    held: dict[str, Page] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": size[0], "height": size[1]})
            # the navigation collapsed to icons; the graph drawn top-down (it fits a wide window)
            context.add_init_script("""
                localStorage.setItem('dagster-nav-collapsed', 'true');
                localStorage.setItem('asset-graph-direction', JSON.stringify('vertical'));
            """)
            for shot in shots:
                page = context.new_page()
                try:
                    held[shot.name] = shot.take(page, url)
                    page.screenshot(path=str(out_dir / f"{shot.name}.png"))
                finally:
                    page.close()
        finally:
            browser.close()
    return held


# ---------------------------------------------------------------------------------------------
# The data and the webserver


def demo_env(work_dir: Path) -> dict[str, str]:
    """This process's environment with a private data dir and Dagster home under work_dir."""
    return {
        **os.environ,
        **FAST_PROVIDERS,
        "CTI_DATA_DIR": str(work_dir / "data"),
        "DAGSTER_HOME": str(work_dir / "data" / "dagster_home"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def run_demo(env: dict[str, str], log_path: Path, days: int = 2) -> None:
    """`cti-assets demo --days N`: the sample imported over N days, every asset materialised."""
    with log_path.open("a") as log:
        result = subprocess.run(  # noqa: S603 - our interpreter, fixed arguments
            [sys.executable, "-m", "cti_assets.cli", "demo", "--sandbox-port", "0",
             "--days", str(days)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=False,
            timeout=300 * days,
        )
    if result.returncode != 0:
        raise RuntimeError(f"the demo failed (exit {result.returncode}); see {log_path}")


@contextmanager
def webserver(env: dict[str, str], log_path: Path, timeout_s: float = 120) -> Iterator[str]:
    """dagster-webserver for this code location on a free loopback port; its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("a") as log:  # a file, not a pipe: an unread pipe blocks the server
        process = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
            [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port),
             "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"dagster-webserver exited; see {log_path}")
                try:
                    if requests.get(f"{url}/server_info", timeout=2).ok:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dagster-webserver did not answer on {url}")
                time.sleep(0.5)  # polling a child process until it listens
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run(out_dir: Path, work_dir: Path, size: tuple[int, int] = SIZE,
        days: int = 2) -> dict[str, Page]:
    """The demo over `days` days in work_dir, the webserver over it, the pictures in out_dir.

    Two days (the plain demo) by default, the quickest run that fills every page; the README's
    pictures take DAYS (main's default) so that each plot has a line."""
    from cti_assets.cli.demo import demo_days

    work_dir.mkdir(parents=True, exist_ok=True)
    # the partitions begin on the demo's first day: the plots' axis spans the partitions up to
    # today, and would otherwise be months of empty days with the demo's line squeezed at its end
    env = {**demo_env(work_dir), "CTI_PARTITIONS_START": demo_days(days)[0]}
    log_path = work_dir / "screenshot.log"
    run_demo(env, log_path, days)
    with webserver(env, log_path) as url:
        return take_screenshots(url, out_dir, size)


def readme_section(shots: tuple[Shot, ...] = SHOTS, folder: str = "docs/screenshots") -> str:
    """The README's "What you see in the UI" pictures, one caption each."""
    return "\n\n".join(f"![{s.name}]({folder}/{s.name}.png)\n*{s.caption}*" for s in shots)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots",
                        help="folder of the PNGs (default docs/screenshots)")
    parser.add_argument("--size", default=f"{SIZE[0]}x{SIZE[1]}",
                        help="viewport WIDTHxHEIGHT in CSS pixels (default %(default)s)")
    parser.add_argument("--days", type=int, default=DAYS,
                        help="consecutive days of the demo (default %(default)s; 2 is quickest)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the demo's data dir, Dagster home and logs here")
    args = parser.parse_args()
    if args.days < 1:
        parser.error(f"--days {args.days}: at least one day")
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 1600x1000")
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} not found: apt-get install chromium", file=sys.stderr)
        return 2
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("playwright is not installed: make install (it is in the dev extra)",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cti-screenshots-") as scratch:
        work_dir = args.keep or Path(scratch)
        held = run(args.out, work_dir, (width, height), args.days)
    for name in held:
        print(f"wrote {args.out / (name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
