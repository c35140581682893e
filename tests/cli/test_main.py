"""`cti-assets` argument handling: argparse errors exit 2, a handler's failure is one line on
stderr and exit 2 (secrets redacted), import is all-or-nothing, export writes a bundle."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import stix2

from cti_assets.cli import main as cli
from cti_assets.cli.errors import CliError
from tests.cli.support import one_line

IMPORTED = re.compile(
    r"imported (\d+) objects from (\d+) file\(s\): (\d+) new, (\d+) already present"
)


def sample_objects() -> list:
    ip = stix2.IPv4Address(value="45.83.72.1")
    domain = stix2.DomainName(value="evil-import.net")
    indicator = stix2.Indicator(
        name="bad address",
        pattern="[ipv4-addr:value = '45.83.72.1']",
        pattern_type="stix",
        valid_from="2026-11-01T00:00:00Z",
    )
    malware = stix2.Malware(name="ImportLoader", is_family=True)
    link = stix2.Relationship(indicator, "indicates", malware)
    return [ip, domain, indicator, malware, link]


@pytest.fixture
def bundle_file(tmp_path):
    objects = sample_objects()
    path = tmp_path / "in" / "small.json"
    path.parent.mkdir()
    path.write_text(stix2.Bundle(objects=objects).serialize())
    return path, [json.loads(obj.serialize()) for obj in objects]


def store():
    from cti_assets.sources.local import LocalStixStore

    return LocalStixStore()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr; an argument refused by the parser exits through
    SystemExit, which a shell sees as the same status."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


# --- argparse ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["no-such-command"],
        ["import"],
        ["explain"],
        ["enrich"],
        ["backfill", "--from", "2026-11-01"],
        ["sandbox", "--port", "not-a-number"],
        ["export", "--no-such-option"],
    ],
)
def test_argument_errors_exit_2_with_one_line_and_no_traceback(capsys, data_dir, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    line = one_line(err)
    assert line.startswith("cti-assets") and line.endswith("--help)")
    assert "Traceback" not in err + out
    assert not (data_dir / "store.sqlite").exists()


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("import", "export", "sandbox", "explain", "enrich", "backfill", "demo",
                    "dev", "pools"):
        assert command in out


# --- failures inside a handler -----------------------------------------------------------------


def test_a_cli_error_is_one_line_naming_the_command(capsys, monkeypatch):
    def refuse(args):
        raise CliError("the pool storage is read-only")

    monkeypatch.setattr(cli, "cmd_pools", refuse)
    code, out, err = run(capsys, "pools")
    assert code == 2 and out == ""
    assert one_line(err) == "cti-assets pools: the pool storage is read-only"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["backfill", "--from", "2026-13-01", "--to", "2026-12-02", "--assets", "observables"],
         "YYYY-MM-DD"),
        (["backfill", "--from", "2026-11-05", "--to", "2026-11-01", "--assets", "observables"],
         "before"),
        (["backfill", "--from", "2026-11-01", "--to", "2026-11-02", "--job", "nope"],
         "unknown job"),
        (["import", "--created-at", "last tuesday", "whatever.json"], "ISO-8601"),
    ],
)
def test_real_handler_errors_are_one_line_exit_2(capsys, data_dir, tmp_path, argv, words):
    existing = tmp_path / "whatever.json"
    existing.write_text("{}")
    argv = [str(existing) if arg == "whatever.json" else arg for arg in argv]
    code, _, err = run(capsys, *argv)
    line = one_line(err)
    assert code == 2
    assert line.startswith(f"cti-assets {argv[0]}: ") and words in line


def test_an_unexpected_exception_is_one_redacted_line(capsys, monkeypatch):
    def crash(args):
        raise ConnectionError(
            "GET https://api.example.test/v1/ip?apikey=SECRET-4242&ip=1.2.3.4 failed"
        )

    monkeypatch.setattr(cli, "cmd_pools", crash)
    code, out, err = run(capsys, "pools")
    line = one_line(err)
    assert code == 2 and out == ""
    assert line.startswith("cti-assets pools: ConnectionError: ")
    assert "SECRET-4242" not in err
    assert "https://api.example.test/v1/ip?apikey=" in line and "ip=1.2.3.4 failed" in line


def test_a_registered_key_is_redacted_wherever_it_appears(capsys, monkeypatch):
    from cti_assets.providers.http import register_secret

    key = "registered-key-for-the-cli-test-7f3a"
    register_secret(key)

    def crash(args):
        raise ValueError(f"the provider echoed {key} back")

    monkeypatch.setattr(cli, "cmd_pools", crash)
    code, _, err = run(capsys, "pools")
    assert code == 2 and key not in err
    assert one_line(err).startswith("cti-assets pools: ValueError: the provider echoed ")


def test_an_unexpected_multi_line_message_still_gives_one_line(capsys, monkeypatch):
    def crash(args):
        raise RuntimeError("2 validation errors\n  field a: missing\n  field b: not an int")

    monkeypatch.setattr(cli, "cmd_pools", crash)
    code, _, err = run(capsys, "pools")
    assert code == 2
    one_line(err)


def test_the_handler_status_is_returned_and_ctrl_c_is_130(capsys, monkeypatch):
    monkeypatch.setattr(cli, "cmd_pools", lambda args: 1)
    assert run(capsys, "pools")[0] == 1

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_pools", interrupted)
    code, _, err = run(capsys, "pools")
    assert code == 130 and "Traceback" not in err


# --- import --------------------------------------------------------------------------------------


def test_import_of_a_missing_file_is_one_line_and_writes_nothing(capsys, data_dir, tmp_path):
    missing = tmp_path / "nope.json"
    code, out, err = run(capsys, "import", str(missing))
    line = one_line(err)
    assert code == 2 and out == ""
    assert line.startswith("cti-assets import: ") and str(missing) in line
    assert store().counts_by_type() == {}


def test_import_of_invalid_json_is_one_line_and_writes_nothing(capsys, data_dir, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "bundle", "objects": [\n  {"type": "ipv4-addr",\n')
    code, _, err = run(capsys, "import", str(broken))
    line = one_line(err)
    assert code == 2
    assert line.startswith("cti-assets import: ") and str(broken) in line and "JSON" in line
    assert store().counts_by_type() == {}


def test_import_of_invalid_stix_is_one_line(capsys, data_dir, tmp_path):
    bad = tmp_path / "bad.json"
    indicator = json.loads(sample_objects()[2].serialize())
    del indicator["pattern"]
    bad.write_text(json.dumps({"type": "bundle", "id": "bundle--0b4f7e24-8a5e-4b39-9bd4-"
                               "b5bd1c1d2b6e", "objects": [indicator]}))
    code, _, err = run(capsys, "import", str(bad))
    line = one_line(err)
    assert code == 2 and str(bad) in line and indicator["id"] in line
    assert store().counts_by_type() == {}


def test_import_is_all_or_nothing_across_files(capsys, data_dir, tmp_path, bundle_file):
    good, _ = bundle_file
    broken = tmp_path / "broken.json"
    broken.write_text("[1, 2")
    code, _, err = run(capsys, "import", str(good), str(broken))
    assert code == 2 and str(broken) in one_line(err)
    assert store().counts_by_type() == {}


def test_import_of_a_valid_bundle_prints_its_counts(capsys, data_dir, bundle_file):
    path, objects = bundle_file
    by_type = Counter(obj["type"] for obj in objects)

    code, out, err = run(capsys, "import", str(path))
    assert code == 0 and err == ""
    lines = out.splitlines()
    match = IMPORTED.fullmatch(lines[0])
    assert match is not None, out
    assert [int(n) for n in match.groups()] == [len(objects), 1, len(objects), 0]
    printed = dict(line.split() for line in lines[1:])
    assert {k: int(v) for k, v in printed.items()} == dict(by_type)
    assert store().counts_by_type() == dict(by_type)

    code, out, _ = run(capsys, "import", str(path))
    match = IMPORTED.fullmatch(out.splitlines()[0])
    assert code == 0 and [int(n) for n in match.groups()] == [len(objects), 1, 0, len(objects)]
    assert store().counts_by_type() == dict(by_type)


def test_import_created_at_stamps_new_objects(capsys, data_dir, bundle_file):
    path, objects = bundle_file
    code, _, _ = run(capsys, "import", "--created-at", "2026-11-03T10:15:00Z", str(path))
    assert code == 0
    seen = store().first_seen([obj["id"] for obj in objects])
    assert set(seen.values()) == {datetime(2026, 11, 3, 10, 15, tzinfo=UTC)}


# --- export --------------------------------------------------------------------------------------


def test_export_writes_the_store_as_a_bundle(capsys, data_dir, tmp_path, bundle_file):
    path, objects = bundle_file
    assert run(capsys, "import", str(path))[0] == 0
    out_file = tmp_path / "out" / "nested" / "export.json"
    code, _, err = run(capsys, "export", "--out", str(out_file))
    assert code == 2 and "out/nested" in one_line(err)  # a missing folder is refused...
    assert not (tmp_path / "out").exists()  # ...and not created
    out_file.parent.mkdir(parents=True)

    code, out, err = run(capsys, "export", "--out", str(out_file))
    assert code == 0 and err == ""
    bundle = json.loads(out_file.read_text())
    assert bundle["type"] == "bundle" and bundle["id"].startswith("bundle--")
    assert sorted(o["id"] for o in bundle["objects"]) == sorted(o["id"] for o in objects)
    assert str(len(objects)) in out and str(out_file) in out
    # the exported bundle is valid STIX and round-trips
    parsed = stix2.parse(out_file.read_text(), allow_custom=True)
    assert len(parsed.objects) == len(objects)

    first = out_file.read_bytes()
    assert run(capsys, "export", "--out", str(out_file), "--force")[0] == 0
    assert out_file.read_bytes() == first


def test_export_of_an_empty_store_is_an_empty_bundle(capsys, data_dir, tmp_path):
    out_file = tmp_path / "empty.json"
    code, _, _ = run(capsys, "export", "--out", str(out_file))
    bundle = json.loads(out_file.read_text())
    assert code == 0 and bundle["type"] == "bundle" and bundle["objects"] == []


def test_export_of_a_partition_with_nothing_is_one_line(capsys, data_dir, tmp_path):
    out_file = tmp_path / "partition.json"
    code, _, err = run(capsys, "export", "--partition", "2026-11-19", "--out", str(out_file))
    line = one_line(err)
    assert code == 2 and line.startswith("cti-assets export: ") and "2026-11-19" in line
    assert not out_file.exists()


def test_export_refuses_an_existing_file_unless_forced(capsys, data_dir, tmp_path, bundle_file):
    path, objects = bundle_file
    assert run(capsys, "import", str(path))[0] == 0
    etc = tmp_path / "etc"
    etc.mkdir()
    target = etc / "passwd"
    target.write_text("root:x:0:0:root:/root:/bin/sh\n")

    code, out, err = run(capsys, "export", "--out", str(target))
    assert code == 2 and out == ""
    assert one_line(err) == f"cti-assets export: {target} already exists; --force replaces it"
    assert target.read_text() == "root:x:0:0:root:/root:/bin/sh\n"

    code, out, err = run(capsys, "export", "--out", str(target), "--force")
    assert (code, err) == (0, "")
    assert len(json.loads(target.read_text())["objects"]) == len(objects)
    assert list(etc.iterdir()) == [target]  # no temporary file left


def test_export_refuses_a_file_that_appears_after_the_check(capsys, data_dir, tmp_path,
                                                            monkeypatch):
    from cti_assets.sources import bundle_files

    target = tmp_path / "out" / "export.json"
    target.parent.mkdir()
    make_bundle = bundle_files.bundle_of

    def bundle_of_while_another_writer_creates_the_file(objects):
        target.write_text("the other writer's\n")
        return make_bundle(objects)

    monkeypatch.setattr(bundle_files, "bundle_of", bundle_of_while_another_writer_creates_the_file)
    code, out, err = run(capsys, "export", "--out", str(target))
    assert code == 2 and out == ""
    assert one_line(err) == f"cti-assets export: {target} already exists; --force replaces it"
    assert target.read_text() == "the other writer's\n"
    assert list(target.parent.iterdir()) == [target]


def test_export_with_force_never_replaces_what_is_not_a_regular_file(capsys, data_dir, tmp_path):
    device_link = tmp_path / "export.json"
    device_link.symlink_to("/dev/null")
    code, _, err = run(capsys, "export", "--out", str(device_link), "--force")
    assert code == 2
    assert one_line(err) == (
        f"cti-assets export: {device_link} exists and is not a regular file: not replaced")
    assert device_link.is_symlink() and str(device_link.readlink()) == "/dev/null"


def test_export_without_out_writes_into_the_data_directory(capsys, data_dir, tmp_path,
                                                          monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    target = data_dir / "bundles" / "export.json"

    code, out, err = run(capsys, "export")
    assert (code, err) == (0, "")
    assert out == f"wrote 0 objects of the local store to {target}\n"
    assert json.loads(target.read_text())["objects"] == []
    assert list(work.iterdir()) == []  # nothing in the working directory
    assert [p.name for p in data_dir.iterdir()] == ["bundles"]  # and no store created

    code, out, err = run(capsys, "export")
    assert code == 2 and out == ""
    assert one_line(err) == f"cti-assets export: {target} already exists; --force replaces it"
    assert run(capsys, "export", "--force")[0] == 0
    assert list((data_dir / "bundles").iterdir()) == [target]


def test_a_partition_export_without_out_is_named_after_its_day(capsys, data_dir, tmp_path,
                                                               monkeypatch):
    from cti_assets.defs import writeback
    from cti_assets.sources.bundle_files import bundle_of
    from cti_assets.storage import outputs

    monkeypatch.chdir(tmp_path)
    data_dir.mkdir()
    monkeypatch.setattr(outputs, "read_partition", lambda asset, key: None)
    monkeypatch.setattr(writeback, "partition_bundle", lambda *frames: bundle_of([]))
    code, out, err = run(capsys, "export", "--partition", "2026-11-19")
    target = data_dir / "bundles" / "bundle-2026-11-19.json"
    assert (code, err) == (0, "")
    assert out == f"wrote 0 objects of partition 2026-11-19 to {target}\n"
    assert target.exists() and not (tmp_path / "export.json").exists()


# --- import --created-at: a time a source could have recorded ----------------------------------


def test_import_refuses_a_creation_time_in_the_future(capsys, data_dir, bundle_file):
    path, _ = bundle_file
    in_five_minutes = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    for created_at in ("2030-01-01T00:00:00Z", in_five_minutes):
        code, out, err = run(capsys, "import", str(path), "--created-at", created_at)
        line = one_line(err)
        assert code == 2 and out == ""
        assert line.startswith(f"cti-assets import: --created-at {created_at} is in the future")
    assert not data_dir.exists()  # nothing imported, no store created


@pytest.mark.parametrize(
    ("start", "created_at"),
    [
        (None, "1990-01-01"),
        (None, "2026-01-01T00:30:00+01:00"),  # 2025-12-31 in UTC, the partitions' time zone
        ("2026-06-01", "2026-05-31T23:59:59Z"),
    ],
)
def test_import_refuses_a_creation_time_before_the_first_partition(
    capsys, data_dir, bundle_file, monkeypatch, start, created_at
):
    if start:
        monkeypatch.setenv("CTI_PARTITIONS_START", start)
    path, _ = bundle_file
    code, out, err = run(capsys, "import", str(path), "--created-at", created_at)
    assert code == 2 and out == ""
    assert one_line(err) == (
        f"cti-assets import: --created-at {created_at} is before the first partition, "
        f"{start or '2026-01-01'} (CTI_PARTITIONS_START): no run could enrich its observables")
    assert not data_dir.exists()


def test_import_accepts_the_first_instant_of_the_first_partition(capsys, data_dir, bundle_file):
    path, objects = bundle_file
    code, _, err = run(capsys, "import", str(path), "--created-at", "2026-01-01T00:00:00Z")
    assert (code, err) == (0, "")
    seen = store().first_seen([obj["id"] for obj in objects])
    assert set(seen.values()) == {datetime(2026, 1, 1, tzinfo=UTC)}


# --- hostile input: the error line stays readable ----------------------------------------------


def test_a_long_value_in_an_error_is_shown_cut_with_its_length(capsys, data_dir, bundle_file):
    path, _ = bundle_file
    code, _, err = run(capsys, "import", str(path), "--created-at", "a" * 100_000)
    assert code == 2
    assert one_line(err) == (
        f"cti-assets import: not an ISO-8601 date or time: '{'a' * 200}…' (100000 characters)")

    code, _, err = run(capsys, "sandbox", "--port", "9" * 100_000)
    assert code == 2
    assert one_line(err) == (
        f"cti-assets sandbox: argument --port: '{'9' * 200}…' (100000 characters) is not a port "
        "number (0-65535) (see cti-assets sandbox --help)")


def test_a_long_value_quoted_elsewhere_still_gives_a_short_line(capsys, data_dir, tmp_path):
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(
        {"type": "bundle", "objects": [{"type": "ipv4-addr", "id": "x" * 100_000}]}))
    code, _, err = run(capsys, "import", str(hostile))
    line = one_line(err)
    assert code == 2 and len(line) < 1_100
    assert line.startswith(f"cti-assets import: {hostile}: object 0 (xxx")
    assert line.endswith("' is not of the form <type>--<uuid>")
    assert re.search(r"… \(\d+ characters left out\) …", line)

    code, _, err = run(capsys, "enrich", "a" * 100_000)
    line = one_line(err)
    assert code == 2 and len(line) < 1_100
    assert line.endswith("…' (100000 characters) is too long for any observable type: "
                         "too_long: 100000 characters (max 1024)")


# --- an unknown option before the command --------------------------------------------------------


@pytest.mark.parametrize("argv", [["--versionx"], ["--versionx", "where"], ["-x", "pools"]])
def test_an_unknown_option_before_the_command_is_named(capsys, data_dir, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert one_line(err) == f"cti-assets: unrecognized arguments: {argv[0]} (see cti-assets --help)"


def test_no_command_at_all_is_still_asked_for(capsys, data_dir):
    code, _, err = run(capsys)
    assert code == 2
    assert one_line(err) == (
        "cti-assets: the following arguments are required: COMMAND (see cti-assets --help)")


@pytest.mark.parametrize("command", [["where"], ["export"], ["pools"]])
def test_a_bad_setting_is_one_line_before_any_command_starts(command, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CTI_BATCH_ROWS", "abc")
    assert cli.main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"cti-assets {command[0]}: CTI_BATCH_ROWS must be")
    assert not (tmp_path / "data").exists()  # nothing started, nothing created


@pytest.mark.parametrize(("argv", "env"), [
    (["demo", "--sandbox-port", "0"], {"OPENCTI_URL": "http://127.0.0.1:9"}),
    (["dev", "--sandbox-port", "0", "--port", "0"], {"CTI_SOURCE": "opencti"}),
    (["enrich", "198.51.100.7", "--sandbox-port", "0"], {"OPENCTI_URL": "http://127.0.0.1:9"}),
])
def test_the_sandbox_never_runs_against_opencti(argv, env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CTI_SOURCE", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"cti-assets {argv[0]}: the provider sandbox answers with made-up data")
    assert "--no-sandbox" in err
    assert not (tmp_path / "data").exists()  # nothing started, imported or written


def _listening() -> socket.socket:
    """A socket holding a free port of 127.0.0.1, listening."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


@pytest.mark.parametrize("which", ["--port", "--sandbox-port"])
def test_dev_names_a_taken_port_before_it_starts_anything(which, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("OPENCTI_URL", raising=False)
    monkeypatch.delenv("CTI_SOURCE", raising=False)
    with _listening() as taken, _listening() as spare:
        port = taken.getsockname()[1]
        other = spare.getsockname()[1]
        spare.close()  # free again: the other port may be used
        argv = ["dev", which, str(port)]
        argv += ["--sandbox-port", str(other)] if which == "--port" else ["--port", str(other)]
        assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"port {port}" in err and f"give another {which}" in err
    assert not (tmp_path / "data").exists()  # no pools set, no dagster dev started


def test_dev_refuses_ui_port_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    assert cli.main(["dev", "--port", "0", "--no-sandbox"]) == 2
    assert "--port 0: the Dagster UI needs a fixed port" in capsys.readouterr().err


@contextlib.contextmanager
def logging_as_it_was():
    """Handlers and levels of every logger put back, so none keeps writing to a closed stream."""
    loggers = [logging.getLogger(), *(logging.getLogger(name)
                                      for name in list(logging.Logger.manager.loggerDict))]
    saved = {id(logger): (logger.handlers[:], logger.level) for logger in loggers}
    try:
        yield
    finally:
        for logger in [logging.getLogger(), *(logging.getLogger(name) for name
                                              in list(logging.Logger.manager.loggerDict))]:
            handlers, level = saved.get(id(logger), ([], logging.NOTSET))
            logger.handlers[:] = handlers
            logger.setLevel(level)


@pytest.mark.parametrize("connector_id, words", [
    ("not-a-uuid", "CONNECTOR_ID must be a UUIDv4"),
    ("6f1c9d1e-3b1a-4c56-9a0e-2d7b8c1f4e55", "cannot register with OpenCTI at http://127.0.0.1:"),
])
def test_a_connector_that_cannot_start_says_why_in_one_line(capsys, data_dir, monkeypatch,
                                                            connector_id, words):
    """A malformed connector id is refused before any call; an unreachable platform is named
    (pycti says it is "waiting" for it, then gives up)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OPENCTI_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OPENCTI_TOKEN", "tok-0a1b2c3d")
    monkeypatch.setenv("CONNECTOR_ID", connector_id)
    with logging_as_it_was():  # the command configures logging onto this test's stderr
        assert cli.main(["connector"]) == 2
    out, err = capsys.readouterr()
    line = err.strip().splitlines()  # nothing else: no pycti traceback before it
    assert len(line) == 1 and line[0].startswith("cti-assets connector: ")
    assert words in line[0] and "Waiting" not in line[0] and "Traceback" not in out
    assert "tok-0a1b2c3d" not in line[0]
