"""`cti-assets`: the terminal side of the project (import, export, sandbox, explain, enrich,
backfill, demo, dev, pools, where).

One resolution of where things live (settings: CTI_DATA_DIR, default ./data; DAGSTER_HOME,
default <data dir>/dagster_home, the same as `make`), shown by `cti-assets where` and `--help`.
Every command turns expected failures into one clear line on stderr and exit status 2; a
traceback here is a bug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from cti_assets.cli.args import (
    day,
    existing_file,
    port_number,
    positive_number,
    rate_limits,
    whole_number,
)
from cti_assets.cli.errors import CliError, quoted, readable_line


def _parse_instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"not an ISO-8601 date or time: {quoted(text)}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _creation_time(text: str) -> datetime:
    """A --created-at a source could have recorded: not in the future, and not before the first
    partition (no run could ever enrich an observable created then)."""
    from cti_assets import settings
    from cti_assets.cli.args import parse_day

    moment = _parse_instant(text)
    now = datetime.now(UTC)
    if moment > now:
        raise CliError(
            f"--created-at {text} is in the future (now: {now:%Y-%m-%dT%H:%M:%SZ}): "
            "no source created an observable then"
        )
    first_day = parse_day(settings.partitions_start())  # main() has checked the setting
    if moment.astimezone(UTC).date() < first_day:
        raise CliError(
            f"--created-at {text} is before the first partition, {first_day} "
            "(CTI_PARTITIONS_START): no run could enrich its observables"
        )
    return moment


def cmd_import(args: argparse.Namespace) -> int:
    from cti_assets.sources.bundle_files import BundleError, import_bundles
    from cti_assets.sources.local import LocalStixStore

    created_at = _creation_time(args.created_at) if args.created_at else None
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
    if created_at is not None and report.kept_observables:
        print(f"  {report.kept_observables} observable(s) were already in the store and keep "
              "their creation time: --created-at applies to new ones only")
    _say_which_days_need_a_run(report.new_observables)
    return 0


def _say_which_days_need_a_run(created: list[datetime]) -> None:
    """Where the new observables will be enriched: the sensor sees only those created within
    its look-back behind its watermark; older ones (backdated) wait for a run of their day,
    and a day already materialised holds them only once it runs again."""
    from cti_assets import settings
    from cti_assets.storage.outputs import stored_partitions

    if not created:
        return
    lookback_s = settings.sensor_lookback_s()
    oldest_seen = datetime.now(UTC).timestamp() - lookback_s
    backdated = sorted({_day(moment) for moment in created if moment.timestamp() < oldest_seen})
    done = set(stored_partitions("observables"))
    recent_done = sorted({_day(m) for m in created if m.timestamp() >= oldest_seen} & done)
    if backdated:
        count = sum(1 for moment in created if moment.timestamp() < oldest_seen)
        print(f"{count} new observable(s) were created before the sensor's look-back "
              f"({lookback_s / 3600:g} h, CTI_SENSOR_LOOKBACK_S), on {_days(backdated)}: a "
              "sensor whose watermark is past them will not pick them up; run their days: "
              f"cti-assets backfill --from {backdated[0]} --to {backdated[-1]}")
    if recent_done:
        print(f"new observables fall on day(s) already materialised ({_days(recent_done)}): "
              "the sensor, when on (make dev), runs them again; otherwise: cti-assets backfill "
              f"--from {recent_done[0]} --to {recent_done[-1]}")


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def _days(days: list[str]) -> str:
    return ", ".join(days) if len(days) <= 5 else f"{len(days)} days, {days[0]} to {days[-1]}"


def cmd_export(args: argparse.Namespace) -> int:
    from cti_assets import settings
    from cti_assets.sources.bundle_files import (
        BundleError,
        bundle_of,
        export_target,
        write_bundle_file,
    )

    default_name = f"bundle-{args.partition}.json" if args.partition else "export.json"
    try:
        out = export_target(
            args.out, settings.data_dir_path() / "bundles" / default_name, overwrite=args.force
        )
    except BundleError as error:
        raise CliError(str(error)) from None
    if args.partition:
        import os

        from cti_assets.defs.writeback import partition_bundle
        from cti_assets.storage.outputs import read_partition

        try:
            if not os.environ.get("CTI_OUTPUTS_BASE") and not settings.data_dir_path().is_dir():
                raise FileNotFoundError  # read nothing, create nothing
            scores = read_partition("observable_scores", args.partition)
            context = read_partition("threat_context", args.partition)
            observables = read_partition("observables", args.partition)
            merged = read_partition("merged_enrichment", args.partition)
        except FileNotFoundError:
            raise CliError(
                f"no scores stored for partition {args.partition} under "
                f"{settings.data_dir_path()}: materialise it first"
            ) from None
        bundle = partition_bundle(scores, context, observables, merged, datetime.now(UTC))
        what = f"of partition {args.partition}"
    else:
        from cti_assets.sources.local import LocalStixStore

        # a store that does not exist yet exports as an empty bundle, without creating it
        store_file = settings.data_dir_path() / "store.sqlite"
        objects = LocalStixStore(store_file).all_objects() if store_file.exists() else []
        bundle = bundle_of(objects)
        what = "of the local store"
    try:
        if args.out is None:
            out.parent.mkdir(parents=True, exist_ok=True)
        write_bundle_file(bundle, out, overwrite=args.force)
    except OSError as error:
        raise CliError(f"cannot create {out.parent}: {error.strerror or error}") from None
    except BundleError as error:
        raise CliError(str(error)) from None
    print(f"wrote {len(bundle['objects'])} objects {what} to {out}")
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from cti_assets.sandbox import serve_forever

    try:
        serve_forever(
            port=args.port, host="127.0.0.1", latency_ms=args.latency_ms,
            rate_limits=args.rate_limits,
        )  # fmt: skip
    except SystemExit as refusal:  # the sandbox's one-line refusal (e.g. the port is taken)
        if isinstance(refusal.code, str):
            raise CliError(refusal.code.removeprefix("provider sandbox: ")) from None
        raise
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
    from cti_assets.cli.backfill import safe_url

    print(f"backfill {backfill_id} launched: {safe_url(args.url)}/runs/b/{backfill_id}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cti_assets.cli.demo import run_demo

    return run_demo(sandbox_port=args.sandbox_port, n_days=args.days)


def cmd_dev(args: argparse.Namespace) -> int:
    from cti_assets.cli.dev import run_dev

    return run_dev(sandbox_port=args.sandbox_port, ui_port=args.port,
                   sandbox=not args.no_sandbox)


def cmd_pools(args: argparse.Namespace) -> int:
    from cti_assets.cli.runs import set_pool_limits

    for pool, limit in set_pool_limits().items():
        print(f"pool {pool:<20} limit {limit}")
    return 0


def where_lines() -> list[str]:
    """Where everything lives, and which setting decided it (nothing is created)."""
    import os

    from cti_assets import settings

    def origin(name: str, default: str) -> str:
        return f"from {name}" if os.environ.get(name) else f"default: {default}; set {name}"

    data = settings.data_dir_path()
    outputs = os.environ.get("CTI_OUTPUTS_BASE") or str(data / "outputs")
    return [
        f"data directory  {data}  ({origin('CTI_DATA_DIR', './data')})",
        f"Dagster home    {settings.dagster_home_path()}  "
        f"({origin('DAGSTER_HOME', '<data directory>/dagster_home')})",
        f"outputs         {outputs}  ({origin('CTI_OUTPUTS_BASE', '<data directory>/outputs')})",
        f"STIX store      {data / 'store.sqlite'}",
        f"response cache  {data / 'cache.sqlite'}",
    ]


def cmd_where(args: argparse.Namespace) -> int:
    print("\n".join(where_lines()))
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit 2), naming the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {readable_line(message)} (see {self.prog} --help)\n")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("cti-assets")
    except PackageNotFoundError:
        return "unknown (not installed)"


def cmd_connector(args: argparse.Namespace) -> int:
    """Run as an OpenCTI enrichment connector (issue 16; docs/connector.md)."""
    import logging

    from cti_assets.connector.config import ConnectorConfigError, settings_from_env
    from cti_assets.connector.service import ConnectorStartError, run_connector

    try:
        settings = settings_from_env()
    except ConnectorConfigError as error:
        raise CliError(str(error)) from None
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        run_connector(settings)
    except ConnectorStartError as error:
        raise CliError(str(error)) from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    epilog = "where things live (cti-assets where):\n  " + "\n  ".join(where_lines())
    parser = OneLineParser(
        prog="cti-assets",
        description=" ".join(__doc__.split("\n\n")[0].split()),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"cti-assets {version()}",
        help="Print the installed version and exit",
    )  # fmt: skip
    # not required=True: argparse would then report a missing COMMAND before an unknown option
    # given ahead of it (`--versionx`); main() asks for the command once the options are read
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str):
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    p = add("import", cmd_import, "Load STIX 2.1 bundles into the local store")
    p.add_argument(
        "files", nargs="+", metavar="FILE.json", type=existing_file, help="STIX 2.1 bundle file(s)"
    )
    p.add_argument("--created-at", help="ISO-8601 creation time recorded for new observables")

    p = add(
        "export", cmd_export, "Write the local store, or one partition's enrichment, as a bundle"
    )
    p.add_argument(
        "--out",
        help="File to write, in an existing directory; a directory gets a file inside it "
        "(default: <data directory>/bundles/export.json, or bundle-DAY.json with --partition)",
    )  # fmt: skip
    p.add_argument(
        "--force", action="store_true",
        help="Replace the file if it exists (without it, an existing file is left as it is "
        "and the export refused)",
    )  # fmt: skip
    p.add_argument(
        "--partition", type=day, help="Day (YYYY-MM-DD) whose write-back bundle to export"
    )

    p = add("sandbox", cmd_sandbox, "Run the provider sandbox (local API simulator)")
    p.add_argument(
        "--port", type=port_number, default=8765, help="Port to listen on (default: 8765)"
    )
    p.add_argument(
        "--latency-ms", type=whole_number, default=0,
        help="Delay added to every answer, in milliseconds (default: 0)",
    )  # fmt: skip
    p.add_argument(
        "--rate-limits", type=rate_limits,
        help='Requests per second per provider, as JSON, e.g. {"virustotal": 4}',
    )  # fmt: skip

    p = add("explain", cmd_explain, "Print a score's whole derivation, down to provider answers")
    p.add_argument("value", help="Observable value or STIX id")
    p.add_argument("--partition", type=day, help="Day to look in (default: the latest with it)")
    p.add_argument("--no-raw", action="store_true", help="Leave out raw provider answers")

    p = add("enrich", cmd_enrich, "Enrich observable values now and print their scores")
    p.add_argument("values", nargs="+", metavar="VALUE", help="IP, domain, URL or file hash")
    p.add_argument(
        "--sandbox-port", type=port_number, default=None,
        help="Use the provider sandbox on this port (the running one, else start one); "
        "without it, the provider settings of the environment",
    )  # fmt: skip

    p = add("backfill", cmd_backfill, "Launch an asset backfill through the Dagster webserver")
    p.add_argument("--from", dest="date_from", required=True, help="First day, YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", required=True, help="Last day (included), YYYY-MM-DD")
    p.add_argument(
        "--assets", nargs="*", default=None, metavar="ASSET",
        help="Assets to backfill (default: the whole graph, or the job's)",
    )  # fmt: skip
    p.add_argument(
        "--job", default=None, help="Backfill a job's assets instead: rescore"
    )
    p.add_argument(
        "--url", default="http://127.0.0.1:3000",
        help="Dagster webserver (default: http://127.0.0.1:3000)",
    )  # fmt: skip

    p = add("demo", cmd_demo, "The main job end to end on the embedded default, with the sandbox")
    p.add_argument(
        "--sandbox-port", type=port_number, default=8765,
        help="Port for the provider sandbox (another free one if taken; default: 8765)",
    )  # fmt: skip
    p.add_argument(
        "--days", type=positive_number, default=2,
        help="Consecutive days to spread the sample over, ending 2026-11-21; more than 2 follow "
        "weekday volumes (default: 2)",
    )  # fmt: skip

    p = add("dev", cmd_dev, "dagster dev with the sensor on and the sandbox answering for every "
            "provider (--no-sandbox: the real providers)")
    p.add_argument(
        "--no-sandbox", action="store_true",
        help="Call the real providers with the keys in the environment (for OpenCTI)",
    )  # fmt: skip
    p.add_argument(
        "--sandbox-port", type=port_number, default=8765,
        help="Port for the provider sandbox (default: 8765)",
    )  # fmt: skip
    p.add_argument(
        "--port", type=port_number, default=3000, help="Port of the Dagster UI (default: 3000)"
    )

    add("pools", cmd_pools, "Set the per-provider pool limits on the Dagster instance")
    add("where", cmd_where, "Print where the data directory, Dagster home and outputs are")
    add("connector", cmd_connector, "Run as an OpenCTI enrichment connector (docs/connector.md)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore", message=".*is currently in beta.*")
    warnings.filterwarnings("ignore", message=".*is currently in preview.*")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("the following arguments are required: COMMAND")
    from cti_assets import settings

    try:
        settings.check_environment()  # a bad setting: one line before anything starts
        return args.handler(args)
    except settings.SettingsError as error:
        print(f"cti-assets {args.command}: {readable_line(str(error))}", file=sys.stderr)
        return 2
    except CliError as error:
        print(f"cti-assets {args.command}: {readable_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say to it
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:  # noqa: BLE001 - last line of defence: one line, no traceback
        from cti_assets.providers.http import redact

        message = readable_line(f"{type(error).__name__}: {redact(str(error))}")
        print(f"cti-assets {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
