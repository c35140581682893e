"""`cti-assets`: the terminal side of the project (import, export, sandbox, explain, enrich,
backfill, demo, dev, pools).

Every command turns expected failures into one clear line on stderr and exit status 2; a
traceback here is a bug.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from cti_assets.cli.errors import CliError


def _parse_instant(text: str) -> datetime:
    from datetime import UTC

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"not an ISO-8601 date or time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_import(args: argparse.Namespace) -> int:
    from cti_assets.sources.bundle_files import BundleError, import_bundles
    from cti_assets.sources.local import LocalStixStore

    created_at = _parse_instant(args.created_at) if args.created_at else None
    try:
        report = import_bundles(LocalStixStore(), [Path(p) for p in args.files], created_at)
    except BundleError as error:
        raise CliError(str(error)) from None
    print(
        f"imported {report.objects} objects from {report.files} file(s): "
        f"{report.created} new, {report.updated} already present"
    )
    for stix_type, count in sorted(report.by_type.items()):
        print(f"  {stix_type:<22} {count}")
    _say_which_days_are_already_materialised(report.observable_days)
    return 0


def _say_which_days_are_already_materialised(observable_days: dict[str, int]) -> None:
    """Observables on a day whose outputs exist are not in them until that day runs again."""
    from cti_assets import settings
    from cti_assets.storage.outputs import stored_partitions

    done = sorted(set(observable_days) & set(stored_partitions("observables")))
    if not done:
        return
    count = sum(observable_days[day] for day in done)
    hours = settings.sensor_lookback_s() / 3600
    print(
        f"{count} observable(s) fall on {len(done)} day(s) already materialised: "
        f"{', '.join(done)}.\n  The sensor picks up those created within its look-back "
        f"({hours:g} h, CTI_SENSOR_LOOKBACK_S) behind its watermark; for the others re-run "
        f"the day: cti-assets backfill --from {done[0]} --to {done[-1]}"
    )


def cmd_export(args: argparse.Namespace) -> int:
    from cti_assets.sources.bundle_files import export_store
    from cti_assets.sources.local import LocalStixStore

    out = Path(args.out)
    if args.partition:
        from cti_assets.defs.writeback import partition_bundle
        from cti_assets.storage.outputs import read_partition

        try:
            scores = read_partition("observable_scores", args.partition)
            context = read_partition("threat_context", args.partition)
            observables = read_partition("observables", args.partition)
        except FileNotFoundError:
            raise CliError(
                f"no scores stored for partition {args.partition}: materialise it first"
            ) from None
        bundle = partition_bundle(args.partition, scores, context, observables)
        out.write_text(json.dumps(bundle, indent=1, sort_keys=True))
        print(f"wrote {len(bundle['objects'])} objects of partition {args.partition} to {out}")
        return 0
    count = export_store(LocalStixStore(), out)
    print(f"wrote {count} objects of the local store to {out}")
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from cti_assets.sandbox import serve_forever

    rate_limits = json.loads(args.rate_limits) if args.rate_limits else None
    serve_forever(
        port=args.port, host="127.0.0.1", latency_ms=args.latency_ms, rate_limits=rate_limits
    )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from cti_assets.cli.explain import explain_value

    print(explain_value(args.value, partition=args.partition, raw=not args.no_raw))
    return 0


def cmd_enrich(args: argparse.Namespace) -> int:
    from cti_assets.cli.enrich import enrich_values

    return enrich_values(args.values, sandbox_port=args.sandbox_port)


def cmd_backfill(args: argparse.Namespace) -> int:
    from cti_assets.cli.backfill import BackfillError, launch_backfill

    try:
        backfill_id = launch_backfill(
            args.date_from, args.date_to, assets=args.assets, url=args.url, job=args.job
        )
    except BackfillError as error:
        raise CliError(str(error)) from None
    print(f"backfill {backfill_id} launched: {args.url}/runs/b/{backfill_id}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cti_assets.cli.demo import run_demo

    return run_demo(sandbox_port=args.sandbox_port)


def cmd_dev(args: argparse.Namespace) -> int:
    from cti_assets.cli.demo import run_dev

    return run_dev(sandbox_port=args.sandbox_port, ui_port=args.port)


def cmd_pools(args: argparse.Namespace) -> int:
    from cti_assets.cli.runs import set_pool_limits

    for pool, limit in set_pool_limits().items():
        print(f"pool {pool:<20} limit {limit}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cti-assets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str):
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    p = add("import", cmd_import, "Load STIX 2.1 bundles into the local store")
    p.add_argument("files", nargs="+", metavar="FILE.json")
    p.add_argument("--created-at", help="ISO-8601 creation time recorded for new observables")

    p = add(
        "export", cmd_export, "Write the local store, or one partition's enrichment, as a bundle"
    )
    p.add_argument("--out", default="export.json")
    p.add_argument("--partition", help="Day (YYYY-MM-DD) whose write-back bundle to export")

    p = add("sandbox", cmd_sandbox, "Run the provider sandbox (local API simulator)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--rate-limits", help='JSON, e.g. {"virustotal": 4}')

    p = add("explain", cmd_explain, "Print a score's whole derivation, down to provider answers")
    p.add_argument("value")
    p.add_argument("--partition", help="Day to look in (default: the latest that has it)")
    p.add_argument("--no-raw", action="store_true", help="Leave out raw provider answers")

    p = add("enrich", cmd_enrich, "Enrich observable values now and print their scores")
    p.add_argument("values", nargs="+")
    p.add_argument("--sandbox-port", type=int, default=None, help="Use a sandbox on this port")

    p = add("backfill", cmd_backfill, "Launch an asset backfill through the Dagster webserver")
    p.add_argument("--from", dest="date_from", required=True)
    p.add_argument("--to", dest="date_to", required=True)
    p.add_argument("--assets", nargs="*", default=None)
    p.add_argument("--job", default=None, help="e.g. rescore")
    p.add_argument("--url", default="http://127.0.0.1:3000")

    p = add("demo", cmd_demo, "The main job end to end on the embedded default, with the sandbox")
    p.add_argument("--sandbox-port", type=int, default=8765)

    p = add("dev", cmd_dev, "dagster dev with the sandbox running and the sensor on")
    p.add_argument("--sandbox-port", type=int, default=8765)
    p.add_argument("--port", type=int, default=3000)

    add("pools", cmd_pools, "Set the per-provider pool limits on the Dagster instance")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore", message=".*is currently in beta.*")
    warnings.filterwarnings("ignore", message=".*is currently in preview.*")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CliError as error:
        print(f"cti-assets {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - last line of defence: one line, no traceback
        from cti_assets.providers.http import redact

        print(
            f"cti-assets {args.command}: {type(error).__name__}: {redact(str(error))}",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
