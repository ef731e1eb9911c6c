from __future__ import annotations

from pathlib import Path

import pytest

from cli.folders import images_in, images_of, people_in


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
