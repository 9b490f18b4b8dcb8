"""Tests of monai_flow.atomic: files and folders are either the old ones or the new ones, never partial."""

import hashlib
import os
import stat
from pathlib import Path

import pytest

import monai_flow.atomic as atomic
from monai_flow.atomic import commit, temporary_sibling, write_atomically, write_folder_atomically


def tree(folder: Path) -> dict[str, str]:
    """Relative path -> content hash of every file below ``folder`` (and its hidden files)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class Crash(Exception):
    pass


# ------------------------------------------------------------------------------------------- files
def test_file_is_written_with_its_mode_and_no_temporary(tmp_path):
    seen = []

    def write(tmp):
        seen.append(Path(tmp))
        Path(tmp).write_text("new")

    path = write_atomically(tmp_path / "sub" / "scores.csv", write)
    assert path.read_text() == "new" and mode(path) == 0o644
    tmp = seen[0]
    assert tmp.parent == path.parent and tmp.name.startswith(".scores") and atomic.PARTIAL in tmp.name
    assert tmp.name.endswith(".csv")  # writers that infer the format from the extension work
    assert names(path.parent) == ["scores.csv"]
    write_atomically(path, lambda tmp: Path(tmp).write_text("newer"), mode=0o600, suffix=".nii.gz")
    assert path.read_text() == "newer" and mode(path) == 0o600 and names(path.parent) == ["scores.csv"]


def test_a_failing_file_write_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old checkpoint")

    def write(tmp):
        Path(tmp).write_bytes(b"half a checkpo")
        raise Crash

    with pytest.raises(Crash):
        write_atomically(path, write)
    assert path.read_bytes() == b"old checkpoint" and names(tmp_path) == ["model.pt"]
    with pytest.raises(Crash):  # also when there was nothing before
        write_atomically(tmp_path / "new.pt", write)
    assert names(tmp_path) == ["model.pt"]


def test_the_file_is_flushed_before_it_is_renamed(tmp_path, monkeypatch):
    events = []
    fsync, replace = atomic._fsync, os.replace
    monkeypatch.setattr(atomic, "_fsync", lambda p, folder=False: (events.append(("fsync", Path(p))), fsync(p, folder)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", Path(b))), replace(a, b)))
    write_atomically(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("x"))
    kinds = [e[0] for e in events]
    assert kinds.index("fsync") < kinds.index("replace") and events[0][1].name.startswith(".a")


def test_temporary_sibling_is_hidden_and_keeps_the_extension(tmp_path):
    a, b = temporary_sibling(tmp_path / "out.nii.gz", ".nii.gz"), temporary_sibling(tmp_path / "out.nii.gz", ".nii.gz")
    assert a != b and a.parent == tmp_path and not a.exists()
    assert a.name.startswith(".out.partial-") and a.name.endswith(".nii.gz") and ".nii.gz.partial" not in a.name
    assert temporary_sibling(tmp_path / "dir", tag=atomic.OLD).name.startswith(".dir.old-")


# ----------------------------------------------------------------------------------------- folders
def write_series(files: dict[str, bytes]):
    def write(folder: Path) -> None:
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)

    return write


def test_folder_is_written_with_its_mode(tmp_path):
    out = write_folder_atomically(tmp_path / "a" / "series", write_series({"0001.dcm": b"1", "sub/0002.dcm": b"2"}))
    assert out == tmp_path / "a" / "series" and set(tree(out)) == {"0001.dcm", "sub/0002.dcm"}
    assert mode(out) == 0o755  # not mkdtemp's 0700: outputs are shared
    assert names(out.parent) == ["series"]


def test_a_new_folder_replaces_the_old_one_completely(tmp_path):
    out = tmp_path / "series"
    write_folder_atomically(out, write_series({"0001.dcm": b"old", "0002.dcm": b"old", ".hidden": b"old"}))
    write_folder_atomically(out, write_series({"0001.dcm": b"new"}), overwrite=True)
    assert tree(out) == tree_of({"0001.dcm": b"new"})  # old files gone, hidden ones too
    assert names(tmp_path) == ["series"]  # no .partial- or .old- sibling left
    (tmp_path / "file").write_bytes(b"a file in the way")
    write_folder_atomically(tmp_path / "file", write_series({"x": b"1"}), overwrite=True)
    assert (tmp_path / "file").is_dir() and names(tmp_path) == ["file", "series"]


def tree_of(files: dict[str, bytes]) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


def test_a_failing_folder_write_leaves_the_old_folder_intact(tmp_path):
    out = tmp_path / "series"
    write_folder_atomically(out, write_series({"0001.dcm": b"old", "0002.dcm": b"old"}))
    before = tree(out)

    def crash(folder):
        (folder / "0001.dcm").write_bytes(b"half")
        raise Crash

    with pytest.raises(Crash):
        write_folder_atomically(out, crash, overwrite=True)
    assert tree(out) == before and names(tmp_path) == ["series"]
    with pytest.raises(Crash):
        write_folder_atomically(tmp_path / "new", crash)
    assert names(tmp_path) == ["series"]


def test_a_failing_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "series"
    write_folder_atomically(out, write_series({"0001.dcm": b"old"}))
    before = tree(out)
    replace = os.replace

    def failing(src, dst):  # the rename aside works, the rename in fails
        if Path(src).name.startswith(".series.partial-"):
            raise OSError(28, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="No space"):
        write_folder_atomically(out, write_series({"0001.dcm": b"new"}), overwrite=True)
    assert tree(out) == before and names(tmp_path) == ["series"]


def test_overwrite_false_refuses_an_existing_folder(tmp_path):
    out = tmp_path / "series"
    write_folder_atomically(out, write_series({"0001.dcm": b"old"}))
    calls = []
    with pytest.raises(FileExistsError, match=str(out)):
        write_folder_atomically(out, lambda f: calls.append(f))
    assert calls == [] and tree(out) == tree_of({"0001.dcm": b"old"}) and names(tmp_path) == ["series"]
    with pytest.raises(FileExistsError, match="not empty"):  # a callable decides on the folder found there
        write_folder_atomically(out, write_series({}), overwrite=lambda p: not (p / "0001.dcm").exists())
    empty = tmp_path / "empty"
    empty.mkdir()
    write_folder_atomically(empty, write_series({"a": b"1"}))  # an empty folder is always replaced
    assert names(empty) == ["a"]


def test_a_folder_appearing_meanwhile_is_refused_or_kept(tmp_path):
    out = tmp_path / "demo"

    def racing(contents: bytes):
        def write(folder):
            (folder / "data").write_bytes(b"ours")
            out.mkdir()  # another process installs its folder while we write
            (out / "data").write_bytes(contents)

        return write

    with pytest.raises(FileExistsError, match=str(out)):
        write_folder_atomically(out, racing(b"theirs"))
    assert tree(out) == tree_of({"data": b"theirs"}) and names(tmp_path) == ["demo"]
    (out / "data").unlink()
    out.rmdir()
    write_folder_atomically(out, racing(b"complete"), overwrite=True, keep=lambda p: (p / "data").read_bytes() == b"complete")
    assert tree(out) == tree_of({"data": b"complete"}) and names(tmp_path) == ["demo"]


def test_every_written_file_is_flushed_before_the_rename(tmp_path, monkeypatch):
    synced = []
    fsync = atomic._fsync
    monkeypatch.setattr(atomic, "_fsync", lambda p, folder=False: (synced.append(Path(p).name), fsync(p, folder)))
    write_folder_atomically(tmp_path / "s", write_series({"0001.dcm": b"1", "sub/0002.dcm": b"2"}))
    assert {"0001.dcm", "0002.dcm"} <= set(synced)


def test_commit_refuses_without_overwrite(tmp_path):
    (tmp_path / "a").write_text("old")
    (tmp_path / ".a.partial-x").write_text("new")
    with pytest.raises(FileExistsError):
        commit(tmp_path / ".a.partial-x", tmp_path / "a", overwrite=False)
    assert commit(tmp_path / ".a.partial-x", tmp_path / "a").read_text() == "new" and names(tmp_path) == ["a"]


# ---------------------------------------------------------------------------------- CLI's Staged
def test_staged_commits_all_outputs_together_or_none(tmp_path):
    from monai_flow.cli.errors import InputError
    from monai_flow.cli.safe_io import Staged

    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "old.dcm").write_bytes(b"old")
    with Staged(overwrite=True) as staged:
        staged.file(tmp_path / "out.nii.gz", ".nii.gz").write_bytes(b"nifti")
        write_series({"0001.dcm": b"new"})(_made(staged.folder(tmp_path / "series")))
        assert staged.commit() == [tmp_path / "out.nii.gz", tmp_path / "series"]
    assert names(tmp_path) == ["out.nii.gz", "series"] and names(tmp_path / "series") == ["0001.dcm"]
    with pytest.raises(Crash), Staged(overwrite=True) as staged:
        staged.file(tmp_path / "out.nii.gz", ".nii.gz").write_bytes(b"other")
        raise Crash
    assert names(tmp_path) == ["out.nii.gz", "series"] and (tmp_path / "out.nii.gz").read_bytes() == b"nifti"
    with pytest.raises(InputError, match="appeared"), Staged() as staged:
        staged.file(tmp_path / "new.nii.gz", ".nii.gz").write_bytes(b"new")
        staged.file(tmp_path / "out.nii.gz", ".nii.gz").write_bytes(b"other")
        staged.commit()
    assert names(tmp_path) == ["out.nii.gz", "series"]  # nothing committed, nothing left


def _made(folder: Path) -> Path:
    folder.mkdir()
    return folder
