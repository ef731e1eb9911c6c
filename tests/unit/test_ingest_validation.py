"""Edge checks of uploads and of legacy paths (no broker needed)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from ingest.app import resolve_legacy_path
from ingest.validation import UploadRejected, check_image, check_text, storable_filename


def _jpeg(size: tuple[int, int] = (20, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size).save(buf, "JPEG")
    return buf.getvalue()


def test_a_small_jpeg_passes() -> None:
    header = check_image(_jpeg(), max_bytes=10_000, max_pixels=1_000)
    assert (header.format, header.width, header.height, header.content_type) == ("JPEG", 20, 10, "image/jpeg")


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"just some text", 415, "not an image"),
        (b"\x00" * 50, 415, "not an image"),
        (_jpeg((200, 200)), 413, "pixels"),
        (_jpeg() + b"x" * 20_000, 413, "over the limit"),
    ],
)
def test_bad_uploads_get_a_clear_status(data: bytes, status: int, words: str) -> None:
    with pytest.raises(UploadRejected) as info:
        check_image(data, max_bytes=10_000, max_pixels=1_000, name="upload.jpg")
    assert info.value.status == status
    assert words in info.value.detail
    assert "upload.jpg" in info.value.detail


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "images" / "sub").mkdir(parents=True)
    (tmp_path / "images" / "sub" / "a.jpg").write_bytes(_jpeg())
    (tmp_path / "secret.jpg").write_bytes(_jpeg())
    (tmp_path / "images" / "escape.jpg").symlink_to(tmp_path / "secret.jpg")
    (tmp_path / "images" / "inside.jpg").symlink_to(tmp_path / "images" / "sub" / "a.jpg")
    return tmp_path / "images"


def test_relative_and_absolute_paths_inside_the_root_resolve(root: Path) -> None:
    assert resolve_legacy_path(root, "sub/a.jpg") == (root / "sub" / "a.jpg").resolve()
    assert resolve_legacy_path(root, str(root / "sub" / "a.jpg")) == (root / "sub" / "a.jpg").resolve()
    assert resolve_legacy_path(root, "inside.jpg") == (root / "sub" / "a.jpg").resolve()


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("../secret.jpg", 403),
        ("sub/../../secret.jpg", 403),
        ("/etc/passwd", 403),
        ("escape.jpg", 403),
        ("sub", 400),
        ("missing.jpg", 404),
        ("a\x00b", 400),
    ],
)
def test_paths_that_escape_or_are_not_files_are_refused(root: Path, path: str, status: int) -> None:
    with pytest.raises(UploadRejected) as info:
        resolve_legacy_path(root, path)
    assert info.value.status == status


def test_devices_are_refused(root: Path) -> None:
    os.symlink("/dev/zero", root / "zero")
    with pytest.raises(UploadRejected) as info:
        resolve_legacy_path(root, "zero")
    assert info.value.status == 403  # /dev is outside the root before it is a device


#: Every C0 control (NUL, tab and newline included), DEL, and the C1 controls.
CONTROLS = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_text_with_a_control_character_is_refused(char: str) -> None:
    with pytest.raises(UploadRejected) as info:
        check_text("camera", f"gate{char}7")
    assert info.value.status == 422
    assert f"camera must not contain control characters: U+{ord(char):04X}" in info.value.detail
    assert "at position 4" in info.value.detail


def test_text_is_refused_with_what_the_event_model_refuses() -> None:
    with pytest.raises(UploadRejected, match=r"U\+0000 \(NUL\)"):
        check_text("source", "a\x00b")
    with pytest.raises(UploadRejected, match="valid Unicode"):
        check_text("source", "\ud800")
    for fine in ("", "gate 7", "Café → 東京 ✓", "~!@#$%^&*()_+{}|:<>?", "\u00a0no-break space"):
        check_text("source", fine)


def test_file_names_are_cut_to_what_the_event_takes() -> None:
    assert storable_filename("a" * 2000) == "a" * 1024
    assert storable_filename("") is None
    assert storable_filename(None) is None
