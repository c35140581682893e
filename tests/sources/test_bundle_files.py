"""Writing a bundle file: never over an existing file unless told, whole or not at all, and no
temporary file left behind whatever fails."""

from __future__ import annotations

import errno
import json
import os

import pytest

from cti_assets.sources.bundle_files import (
    BundleError,
    bundle_of,
    export_target,
    write_bundle_file,
)

EMPTY = bundle_of([])
THEIRS = "the other writer's\n"


def test_a_new_file_is_written_whole_and_alone(tmp_path):
    target = tmp_path / "export.json"
    assert write_bundle_file(EMPTY, target) == target
    assert json.loads(target.read_text()) == EMPTY
    assert list(tmp_path.iterdir()) == [target]


def test_an_existing_file_is_refused_unless_overwrite(tmp_path):
    target = tmp_path / "export.json"
    target.write_text(THEIRS)
    with pytest.raises(BundleError, match=r"export\.json already exists; --force replaces it$"):
        write_bundle_file(EMPTY, target)
    assert target.read_text() == THEIRS
    write_bundle_file(EMPTY, target, overwrite=True)
    assert json.loads(target.read_text()) == EMPTY
    assert list(tmp_path.iterdir()) == [target]


def test_a_file_that_appears_during_the_write_is_not_replaced(tmp_path, monkeypatch):
    target = tmp_path / "export.json"
    sync = os.fsync

    def fsync_while_another_writer_creates_the_file(descriptor: int) -> None:
        sync(descriptor)
        target.write_text(THEIRS)

    monkeypatch.setattr(os, "fsync", fsync_while_another_writer_creates_the_file)
    with pytest.raises(BundleError, match="already exists"):
        write_bundle_file(EMPTY, target)
    assert target.read_text() == THEIRS
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize(("overwrite", "placing"), [(False, "link"), (True, "replace")])
def test_a_failed_write_leaves_no_temporary_file_and_the_target_as_it_was(
    tmp_path, monkeypatch, overwrite, placing
):
    target = tmp_path / "export.json"
    if overwrite:
        target.write_text(THEIRS)

    def disk_full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, placing, disk_full)
    with pytest.raises(BundleError, match=r"cannot write .*export\.json: No space left on device"):
        write_bundle_file(EMPTY, target, overwrite=overwrite)
    assert sorted(tmp_path.iterdir()) == ([target] if overwrite else [])
    if overwrite:
        assert target.read_text() == THEIRS


def test_without_hard_links_the_file_is_still_created_exclusively(tmp_path, monkeypatch):
    def no_hard_links(*args: object) -> None:  # as on FAT and some network file systems
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    target = tmp_path / "export.json"
    write_bundle_file(EMPTY, target)
    assert json.loads(target.read_text()) == EMPTY
    target.write_text(THEIRS)
    with pytest.raises(BundleError, match="already exists"):
        write_bundle_file(EMPTY, target)
    assert target.read_text() == THEIRS
    assert list(tmp_path.iterdir()) == [target]


def test_overwrite_never_replaces_what_is_not_a_regular_file(tmp_path):
    folder = tmp_path / "export.json"
    folder.mkdir()
    with pytest.raises(BundleError, match="is not a regular file: not replaced$"):
        write_bundle_file(EMPTY, folder, overwrite=True)
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert list(tmp_path.iterdir()) == [folder]


def test_the_target_is_the_default_a_file_or_a_file_inside_a_directory(tmp_path):
    default = tmp_path / "data" / "bundles" / "export.json"
    assert export_target(None, default) == default  # its folder is created when writing
    assert export_target(tmp_path / "out.json", default) == tmp_path / "out.json"
    assert export_target(tmp_path, default) == tmp_path / "export.json"
    (tmp_path / "export.json").write_text(THEIRS)
    with pytest.raises(BundleError, match="already exists"):
        export_target(tmp_path, default)
    assert export_target(tmp_path, default, overwrite=True) == tmp_path / "export.json"


def test_an_over_long_file_name_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match="File name too long"):
        export_target(tmp_path / ("a" * 100_000), tmp_path / "export.json")
