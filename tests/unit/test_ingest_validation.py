"""Edge checks of uploads and of legacy paths (no broker needed)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from ingest.app import resolve_legacy_path
from ingest.validation import UploadRejected, check_image


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
