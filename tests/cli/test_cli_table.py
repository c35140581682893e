"""The CLI table: every command with good input and with each bad input, the exit code and the
one-line message asserted. A bad argument gets exactly one line on stderr (no traceback), a
non-zero exit, and leaves no file behind (the working directory, the data directory and the
target directories are compared before and after)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import stix2

from cti_assets.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]


class FakeWebserver:
    """A stand-in Dagster webserver: answers POST /graphql with a set status and body."""

    def __init__(self) -> None:
        self.status, self.body, self.posts = 200, b"{}", []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    fake.posts.append(json.loads(self.rfile.read(length)))
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(fake.body)))
                self.end_headers()
                self.wfile.write(fake.body)

            do_GET = do_POST  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, status: int, body: dict) -> None:
        self.status, self.body = status, json.dumps(body).encode()


@pytest.fixture(scope="module")
def webserver():
    fake = FakeWebserver()
    yield fake
    fake.server.shutdown()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A working directory and a data directory of its own, nothing leaking in."""
    work, data = tmp_path / "work", tmp_path / "data"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("CTI_DATA_DIR", str(data))
    monkeypatch.setenv("DAGSTER_HOME", "")  # unset; restored after the test whatever happens
    for name in ("CTI_OUTPUTS_BASE", "CTI_SOURCE", "OPENCTI_URL", "CTI_PARTITIONS_START"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse: usage errors, --help, --version
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"stderr should be one line, got {lines!r}"
    assert "Traceback" not in err
    return lines[0]


def bundle_file(folder: Path) -> Path:
    objects = [stix2.IPv4Address(value="45.83.72.1"), stix2.DomainName(value="evil-cli.net")]
    path = folder / "in.json"
    path.write_text(stix2.Bundle(objects=objects).serialize())
    return path


# --- bad input: (argv, exit code, the one line on stderr) -------------------------------------
# {tmp} is the test's folder, {url} the fake webserver.

BAD = [
    ([], 2, r"^cti-assets: the following arguments are required: COMMAND"),
    (["--versionx"], 2, r"^cti-assets: unrecognized arguments: --versionx \(see cti-assets"),
    (["no-such-command"], 2, r"^cti-assets: argument COMMAND: invalid choice: 'no-such-command'"),
    (["import"], 2, r"^cti-assets import: the following arguments are required: FILE\.json"),
    (["import", "{tmp}/missing.json"], 2,
     r"^cti-assets import: argument FILE\.json: .*/missing\.json: no such file"),
    (["import", "{tmp}"], 2, r"^cti-assets import: argument FILE\.json: .*: not a file"),
    (["import", "{tmp}/in.json", "--created-at", "banana"], 2,
     r"^cti-assets import: not an ISO-8601 date or time: 'banana'$"),
    (["import", "{tmp}/in.json", "--created-at", "2030-01-01T00:00:00Z"], 2,
     r"^cti-assets import: --created-at 2030-01-01T00:00:00Z is in the future \(now: "),
    (["import", "{tmp}/in.json", "--created-at", "1990-01-01"], 2,
     r"^cti-assets import: --created-at 1990-01-01 is before the first partition, 2026-01-01 "
     r"\(CTI_PARTITIONS_START\)"),
    (["export", "--partition", "banana"], 2,
     r"^cti-assets export: argument --partition: 'banana' is not a date \(YYYY-MM-DD\)"),
    (["export", "--partition", "2026-02-30"], 2, r"'2026-02-30' is not a date \(YYYY-MM-DD\)"),
    (["export", "--partition", "2026-11-19"], 2,
     r"^cti-assets export: no scores stored for partition 2026-11-19 under .*/data: "
     r"materialise it first$"),
    (["export", "--out", "/nonexistent/x.json"], 2,
     r"^cti-assets export: cannot write /nonexistent/x\.json: directory /nonexistent does not "
     r"exist$"),
    (["export", "--out", "/nonexistent/x.json", "--partition", "2026-11-19"], 2,
     r"^cti-assets export: cannot write /nonexistent/x\.json: directory /nonexistent does not "
     r"exist$"),
    (["export", "--out", "{tmp}/in.json/x.json"], 2,
     r"^cti-assets export: cannot write .*/in\.json/x\.json: .*/in\.json is not a directory$"),
    (["export", "--no-such-option"], 2, r"^cti-assets: unrecognized arguments: --no-such-option"),
    (["export", "--out", "{tmp}/in.json"], 2,
     r"^cti-assets export: .*/in\.json already exists; --force replaces it$"),
    (["sandbox", "--rate-limits", "[1,2]"], 2,
     r"^cti-assets sandbox: argument --rate-limits: '\[1,2\]' is not a JSON object of provider "
     r"to requests per second"),
    (["sandbox", "--rate-limits", "{bad"], 2, r"'\{bad' is not JSON"),
    (["sandbox", "--rate-limits", '{"nope": 1}'], 2, r"unknown provider 'nope'; known: "),
    (["sandbox", "--rate-limits", '{"virustotal": -1}'], 2,
     r"the limit of virustotal must be a positive number of requests per second"),
    (["sandbox", "--port", "99999"], 2,
     r"^cti-assets sandbox: argument --port: '99999' is not a port number \(0-65535\)"),
    (["sandbox", "--port", "{busy}"], 2,
     r"^cti-assets sandbox: cannot listen on 127\.0\.0\.1:\d+: Address already in use$"),
    (["sandbox", "--port", "not-a-number"], 2, r"'not-a-number' is not a port number"),
    (["sandbox", "--latency-ms", "-5"], 2, r"'-5' is not a whole number >= 0"),
    (["explain"], 2, r"^cti-assets explain: the following arguments are required: value"),
    (["explain", "1.2.3.4", "--partition", "banana"], 2, r"'banana' is not a date"),
    (["explain", "1.2.3.4"], 2,
     r"^cti-assets explain: no data directory at .*/data \(CTI_DATA_DIR\): nothing has been "
     r"scored yet$"),
    (["enrich"], 2, r"^cti-assets enrich: the following arguments are required: VALUE"),
    (["enrich", "not a value!"], 2,
     r"^cti-assets enrich: 'not a value!' is not an IP address, domain, URL or MD5/SHA-1/SHA-256 "
     r"hash$"),
    (["enrich", "8.8.8.8", "--sandbox-port", "99999"], 2, r"'99999' is not a port number"),
    (["enrich", "8.8.8.8", "--sandbox-port", "{busy}"], 2,
     r"^cti-assets enrich: port \d+ is in use by something that is not the provider sandbox; "
     r"give another --sandbox-port$"),
    (["backfill", "--from", "2026-11-01"], 2,
     r"^cti-assets backfill: the following arguments are required: --to"),
    (["backfill", "--from", "banana", "--to", "2026-11-02"], 2,
     r"^cti-assets backfill: --from 'banana' is not a date \(YYYY-MM-DD\)$"),
    (["backfill", "--from", "2026-11-01", "--to", "2026-13-01"], 2,
     r"^cti-assets backfill: --to '2026-13-01' is not a date \(YYYY-MM-DD\)$"),
    (["backfill", "--from", "2026-11-02", "--to", "2026-11-01"], 2,
     r"^cti-assets backfill: --to 2026-11-01 is before --from 2026-11-02$"),
    (["backfill", "--from", "2025-12-30", "--to", "2026-01-02"], 2,
     r"^cti-assets backfill: --from 2025-12-30 is before the first partition, 2026-01-01 "
     r"\(CTI_PARTITIONS_START\)$"),
    (["backfill", "--from", "2026-11-01", "--to", "2999-01-01"], 2,
     r"^cti-assets backfill: --to 2999-01-01 is after today's partition"),
    (["backfill", "--from", "2026-11-01", "--to", "2026-11-02", "--assets"], 2,
     r"^cti-assets backfill: --assets needs one or more asset names$"),
    (["backfill", "--from", "2026-11-01", "--to", "2026-11-02", "--assets", "nope"], 2,
     r"^cti-assets backfill: unknown asset\(s\): nope; known: .*observable_scores"),
    (["backfill", "--from", "2026-11-01", "--to", "2026-11-02", "--job", "nope"], 2,
     r"^cti-assets backfill: unknown job 'nope'; known: rescore$"),
    (["backfill", "--from", "2026-11-01", "--to", "2026-11-02", "--url", "{url}"], 2,
     r"^cti-assets backfill: webserver answered HTTP 500: Invalid partition keys: 2026-11-02$"),
    (["backfill", "--from", "2026-11-01", "--to", "2026-11-02",
      "--url", "http://user:s3cret@127.0.0.1:{busy_closed}"], 2,
     r"^cti-assets backfill: cannot reach the Dagster webserver at http://127\.0\.0\.1:\d+: "
     r"ConnectionError \(is `make dev` running\? --url sets where\)$"),
    (["demo", "--sandbox-port", "99999"], 2, r"^cti-assets demo: argument --sandbox-port: "),
    (["demo", "--days", "0"], 2,
     r"^cti-assets demo: argument --days: '0' is not a whole number >= 1"),
    (["dev", "--port", "70000"], 2, r"^cti-assets dev: argument --port: '70000' is not a port"),
    (["where", "extra"], 2, r"^cti-assets: unrecognized arguments: extra"),
]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(("argv", "code", "message"), BAD, ids=[" ".join(c[0]) for c in BAD])
def test_bad_input_is_one_line_nonzero_and_leaves_no_file(
    capsys, env, webserver, argv, code, message
):
    bundle_file(env)
    webserver.answer(500, {"errors": [{"message": "Invalid partition keys: 2026-11-02"}]})
    fills = {"{tmp}": str(env), "{url}": webserver.url, "{busy}": str(webserver.port),
             "{busy_closed}": str(closed_port())}
    argv = [_fill(a, fills) for a in argv]
    before = files_under(env)
    got, out, err = run(capsys, argv)
    line = one_line(err)
    assert got == code, (got, line)
    assert re.search(message, line), line
    assert "s3cret" not in err + out
    assert files_under(env) == before  # no stray file: no ./data, no temp file, no output
    assert not Path("/nonexistent").exists()


def _fill(text: str, fills: dict[str, str]) -> str:
    for key, value in fills.items():
        text = text.replace(key, value)
    return text


# --- good input --------------------------------------------------------------------------------


def test_version_and_help(capsys, env):
    code, out, err = run(capsys, ["--version"])
    assert (code, err) == (0, "") and re.fullmatch(r"cti-assets \d+\.\d+\.\d+\S*\n", out)
    code, out, _ = run(capsys, ["--help"])
    assert code == 0 and "where things live" in out and str(env / "data") in out
    for command in ("import", "export", "sandbox", "explain", "enrich", "backfill", "demo",
                    "dev", "pools", "where"):
        assert re.search(rf"^\s+{command}\s+\S", out, re.M), command


def test_every_option_of_every_command_has_help():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    undocumented = [
        f"{name} {action.dest}"
        for name, command in commands.items()
        for action in command._actions
        if not action.help
    ]
    assert not undocumented


def test_where_resolves_the_dagster_home_under_the_data_dir_and_creates_nothing(capsys, env):
    code, out, err = run(capsys, ["where"])
    assert (code, err) == (0, "")
    data = env / "data"
    assert f"data directory  {data}  (from CTI_DATA_DIR)" in out
    home = data / "dagster_home"
    assert f"Dagster home    {home}  (default: <data directory>/dagster_home" in out
    assert not data.exists()


def test_where_follows_dagster_home_when_set(capsys, env, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(env / "elsewhere"))
    code, out, _ = run(capsys, ["where"])
    assert code == 0 and f"Dagster home    {env / 'elsewhere'}  (from DAGSTER_HOME)" in out


def test_import_then_export_to_a_file_and_into_a_directory(capsys, env):
    source = bundle_file(env)
    code, out, err = run(capsys, ["import", str(source)])
    assert (code, err) == (0, "") and out.startswith("imported 2 objects from 1 file(s)")
    target = env / "out.json"
    code, out, err = run(capsys, ["export", "--out", str(target)])
    assert (code, err) == (0, "") and out == f"wrote 2 objects of the local store to {target}\n"
    assert len(json.loads(target.read_text())["objects"]) == 2
    folder = env / "exports"
    folder.mkdir()
    code, out, _ = run(capsys, ["export", "--out", str(folder)])
    assert code == 0 and out == f"wrote 2 objects of the local store to {folder / 'export.json'}\n"
    assert sorted(p.name for p in folder.iterdir()) == ["export.json"]  # no temp file left


def test_export_of_no_store_yet_is_an_empty_bundle_and_creates_no_store(capsys, env):
    target = env / "data" / "bundles" / "export.json"
    code, out, _ = run(capsys, ["export"])
    assert code == 0 and out == f"wrote 0 objects of the local store to {target}\n"
    assert json.loads(target.read_text())["objects"] == []
    assert files_under(env / "data") == {target.parent, target}  # no store
    assert files_under(env / "work") == set()  # nothing in the working directory


def test_explain_with_a_data_dir_but_no_scores_says_where_it_searched(capsys, env):
    (env / "data").mkdir()
    code, _, err = run(capsys, ["explain", "1.2.3.4"])
    line = one_line(err)
    assert code == 2
    assert line == (f"cti-assets explain: no scores stored yet: run `make demo` or materialise "
                    f"observable_scores (searched {env / 'data'} (CTI_DATA_DIR))")


def test_backfill_sends_the_checked_request_and_prints_the_backfill(capsys, env, webserver):
    webserver.posts.clear()
    webserver.answer(200, {"data": {"launchPartitionBackfill": {
        "__typename": "LaunchBackfillSuccess", "backfillId": "abcdefgh", "launchedRunIds": []}}})
    code, out, err = run(capsys, ["backfill", "--from", "2026-11-01", "--to", "2026-11-02",
                                  "--assets", "observable_scores", "--url", webserver.url])
    assert (code, err) == (0, "")
    assert out == f"backfill abcdefgh launched: {webserver.url}/runs/b/abcdefgh\n"
    params = webserver.posts[-1]["variables"]["backfillParams"]
    assert params["partitionNames"] == ["2026-11-01", "2026-11-02"]
    assert params["assetSelection"] == [{"path": ["observable_scores"]}]


def test_backfill_shows_a_graphql_refusal(capsys, env, webserver):
    webserver.answer(200, {"data": {"launchPartitionBackfill": {
        "__typename": "PartitionKeysNotFoundError", "message": "Partition keys missing"}}})
    code, _, err = run(capsys, ["backfill", "--from", "2026-11-01", "--to", "2026-11-01",
                                "--job", "rescore", "--url", webserver.url])
    assert code == 2 and one_line(err) == (
        "cti-assets backfill: webserver refused the backfill: PartitionKeysNotFoundError: "
        "Partition keys missing")


def test_sandbox_serves_until_stopped_and_prints_its_urls():
    port = closed_port()
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "cti_assets.cli", "sandbox", "--port", str(port),
         "--rate-limits", '{"virustotal": 4}'],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = process.stdout.readline()
        assert first.startswith(f"export VIRUSTOTAL_BASE_URL=http://127.0.0.1:{port}/")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_bad_argument_in_a_real_process_is_one_line():
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "cti_assets.cli", "sandbox", "--rate-limits", "[1,2]"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert one_line(result.stderr).startswith("cti-assets sandbox: argument --rate-limits: ")


@pytest.mark.slow
def test_pools_sets_the_limits_on_the_data_dirs_dagster_home(capsys, env, monkeypatch):
    from cti_assets.cli import runs

    # two pools, not seven: each limit is one `dagster instance concurrency set` process
    limits = {"virustotal": 1, "greynoise": 2}
    monkeypatch.setattr(runs, "POOL_LIMITS", limits)
    code, out, err = run(capsys, ["pools"])
    assert (code, err) == (0, "")
    assert out == "pool virustotal           limit 1\npool greynoise            limit 2\n"
    assert (env / "data" / "dagster_home" / "dagster.yaml").exists()  # the project's, copied
    assert runs.pool_limits_set() == limits  # read back from that instance


@pytest.mark.slow
def test_enrich_reuses_a_running_sandbox_and_records_the_run(capsys, env, monkeypatch):
    import dagster as dg

    from cti_assets.cli.demo import KEYED_PROVIDERS
    from cti_assets.sandbox import ProviderSandbox

    for provider in KEYED_PROVIDERS:
        monkeypatch.delenv(f"{provider}_API_KEY", raising=False)
    monkeypatch.setenv("VIRUSTOTAL_PER_MINUTE", "6000")
    with ProviderSandbox(port=0) as sandbox:
        code, out, err = run(capsys, ["enrich", "45.83.12.7", "--sandbox-port",
                                      str(sandbox.port)])
        assert (code, err) == (0, ""), err
        assert f"using the provider sandbox already running on port {sandbox.port}" in out
        assert "45.83.12.7: " in out
        assert sandbox.request_count() > 0  # the running sandbox answered
    home = env / "data" / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs_count() >= 1  # visible in the UI of that Dagster home


def test_explain_outside_the_repo_names_the_default_data_dir_and_creates_none(
    capsys, env, monkeypatch
):
    monkeypatch.delenv("CTI_DATA_DIR")
    code, _, err = run(capsys, ["explain", "1.2.3.4"])
    assert code == 2 and one_line(err) == (
        f"cti-assets explain: no data directory at {env / 'work' / 'data'} (the default, ./data):"
        " nothing has been scored yet")
    assert not (env / "work" / "data").exists()
