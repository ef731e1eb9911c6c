from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from cli.folders import images_in, images_of, people_in, unpacked


def test_both_known_people_layouts(tmp_path: Path) -> None:
    (tmp_path / "Ada_Lovelace").mkdir()
    (tmp_path / "Ada_Lovelace" / "one.jpg").write_bytes(b"x")
    (tmp_path / "Ada_Lovelace" / "notes.txt").write_bytes(b"x")
    (tmp_path / "Barack_Obama_1.jpg").write_bytes(b"x")
    (tmp_path / "Barack_Obama_2.png").write_bytes(b"x")
    (tmp_path / "biden.jpg").write_bytes(b"x")
    people = people_in(tmp_path)
    assert sorted(people) == ["Ada Lovelace", "Barack Obama", "biden"]
    assert [p.name for p in people["Barack Obama"]] == ["Barack_Obama_1.jpg", "Barack_Obama_2.png"]
    assert [p.name for p in people["Ada Lovelace"]] == ["one.jpg"]


def test_images_are_found_recursively_and_other_files_ignored(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.JPG").write_bytes(b"x")
    (tmp_path / "readme.md").write_bytes(b"x")
    assert [p.name for p in images_in(tmp_path)] == ["x.JPG"]


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        people_in(tmp_path / "nope")


def test_named_files_are_sent_whatever_their_suffix_and_folders_are_searched(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.png").write_bytes(b"x")
    (tmp_path / "d" / "notes.txt").write_bytes(b"x")
    (tmp_path / "photo.dat").write_bytes(b"x")
    assert images_of([tmp_path / "photo.dat", tmp_path / "d"]) == [
        tmp_path / "photo.dat",
        tmp_path / "d" / "a.png",
    ]
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        images_of([tmp_path / "nope"])


def _lfw(root: Path) -> None:
    """Two people in LFW's layout under ``root``."""
    for person, n in (("Ada_Lovelace", 2), ("Alan_Turing", 1)):
        (root / person).mkdir(parents=True)
        for i in range(1, n + 1):
            (root / person / f"{person}_{i:04d}.jpg").write_bytes(b"x")


def test_an_import_opens_a_folder_a_zip_or_a_tar_of_the_same_layout(tmp_path: Path) -> None:
    layout = tmp_path / "lfw"
    _lfw(layout)
    with zipfile.ZipFile(tmp_path / "people.zip", "w") as z:
        for f in sorted(layout.rglob("*.jpg")):
            z.write(f, f.relative_to(layout))
    with tarfile.open(tmp_path / "lfw.tgz", "w:gz") as t:
        t.add(layout, "lfw")  # wrapped in one folder, as LFW's own archive is
    expected = {
        "Ada Lovelace": ["Ada_Lovelace_0001.jpg", "Ada_Lovelace_0002.jpg"],
        "Alan Turing": ["Alan_Turing_0001.jpg"],
    }
    for source in (layout, tmp_path / "people.zip", tmp_path / "lfw.tgz"):
        with unpacked(source) as folder:
            assert {k: [p.name for p in v] for k, v in people_in(folder).items()} == expected, source
    with unpacked(tmp_path / "lfw.tgz") as folder:
        pass
    assert not folder.exists()  # the unpacked copy is gone


def test_an_archive_of_one_persons_folder_is_that_person(tmp_path: Path) -> None:
    (tmp_path / "src" / "Ada_Lovelace").mkdir(parents=True)
    (tmp_path / "src" / "Ada_Lovelace" / "a.jpg").write_bytes(b"x")
    with tarfile.open(tmp_path / "ada.tar", "w") as t:
        t.add(tmp_path / "src" / "Ada_Lovelace", "Ada_Lovelace")
    with unpacked(tmp_path / "ada.tar") as folder:
        assert list(people_in(folder)) == ["Ada Lovelace"]


def test_an_archive_cannot_write_outside_its_folder(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        z.writestr("../../escaped.jpg", b"x")
    with pytest.raises(ValueError, match="outside"), unpacked(tmp_path / "evil.zip"):
        pass
    info = tarfile.TarInfo("../escaped.jpg")
    info.size = 1
    with tarfile.open(tmp_path / "evil.tar", "w") as t:
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="cannot unpack"), unpacked(tmp_path / "evil.tar"):
        pass
    assert not (tmp_path.parent / "escaped.jpg").exists()


def test_an_import_of_something_else_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(ValueError, match="neither a folder nor"), unpacked(tmp_path / "notes.txt"):
        pass
    with pytest.raises(FileNotFoundError), unpacked(tmp_path / "nope.zip"):
        pass
