"""The pure recognition function on real photos and on bad bytes."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recognizer.core import DetectionConfig, decode_image, find_faces, largest_face, load_image, recognize
from recognizer.errors import ImageRejected
from recognizer.gallery import Gallery, default_rule
from schemas.events import FailureReason, Outcome

CFG = DetectionConfig()
ROOT = Path(__file__).resolve().parents[2]


def _png(mode: str, size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", FailureReason.NOT_AN_IMAGE),
        (b"hello, this is text", FailureReason.NOT_AN_IMAGE),
        (b"%PDF-1.4\n%...", FailureReason.NOT_AN_IMAGE),
    ],
)
def test_bytes_that_are_not_images_are_rejected(data: bytes, reason: FailureReason) -> None:
    with pytest.raises(ImageRejected) as info:
        load_image(data)
    assert info.value.reason == reason


def test_a_truncated_jpeg_is_corrupt(faces_dir: Path) -> None:
    data = (faces_dir / "sample/examples/obama.jpg").read_bytes()
    with pytest.raises(ImageRejected) as info:
        load_image(data[: len(data) // 3])
    assert info.value.reason == FailureReason.CORRUPT_IMAGE


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")  # tiny file, 400 megapixels
    assert len(buf.getvalue()) < 200_000
    with pytest.raises(ImageRejected) as info:
        load_image(buf.getvalue(), max_pixels=50_000_000)
    assert info.value.reason == FailureReason.DECOMPRESSION_BOMB


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "I;16", "CMYK"])
def test_every_pixel_mode_becomes_rgb(mode: str) -> None:
    if mode == "CMYK":
        buf = io.BytesIO()
        Image.new("CMYK", (8, 8)).save(buf, "JPEG")
        data = buf.getvalue()
    else:
        data = _png(mode)
    arr = load_image(data)
    assert arr.dtype == np.uint8
    assert arr.shape[2] == 3


@pytest.mark.parametrize(
    "path",
    [
        "extras/odd_format/deepface_img47_webp_content_named.jpg",
        "extras/derived/obama_grayscale_L.jpg",
        "extras/grayscale/orl_att_faces/s1/1.pgm",
        "sample/examples/alex-lacamoire.png",
    ],
)
def test_odd_formats_decode_and_show_a_face(faces_dir: Path, path: str) -> None:
    rgb = load_image((faces_dir / path).read_bytes())
    assert len(find_faces(rgb, CFG)) >= 1


def test_exif_orientation_is_applied(faces_dir: Path) -> None:
    upright = load_image((faces_dir / "sample/examples/obama.jpg").read_bytes())
    rotated = load_image(
        (faces_dir / "extras/derived/obama_stored_rot90cw_exif_orientation8.jpg").read_bytes()
    )
    assert rotated.shape == upright.shape
    assert len(find_faces(rotated, CFG)) == 1


def test_group_photo_every_face_with_its_box_left_to_right(faces_dir: Path) -> None:
    rgb = load_image((faces_dir / "extras/group/facenet_pytorch_multiface.jpg").read_bytes())
    faces = find_faces(rgb, CFG)
    assert len(faces) >= 4
    lefts = [f.box.left for f in faces]
    assert lefts == sorted(lefts)
    h, w = rgb.shape[:2]
    assert all(0 <= f.box.left < f.box.right <= w and 0 <= f.box.top < f.box.bottom <= h for f in faces)


def test_large_photo_is_downscaled_for_detection_but_boxes_are_in_original_pixels(faces_dir: Path) -> None:
    data = (faces_dir / "extras/large/deepface_img40_3061x4600.jpg").read_bytes()
    timings: dict[str, float] = {}
    rgb = load_image(data)
    faces = find_faces(rgb, CFG, timings)
    assert len(faces) == 1
    box = faces[0].box
    assert box.right - box.left > 300  # a face this big exists only at full resolution
    assert set(timings) == {"detect", "encode"}


def test_recognize_names_an_enrolled_person_and_leaves_strangers_unknown(faces_dir: Path) -> None:
    gallery = Gallery()
    for pid, name, path in [("p-obama", "Obama", "obama.jpg"), ("p-biden", "Biden", "biden.jpg")]:
        face = largest_face(find_faces(load_image((faces_dir / "sample/examples" / path).read_bytes()), CFG))
        assert face is not None
        gallery.add_face(pid, f"{pid}-1", face.encoding)
        gallery.set_person(pid, name)
    rule = default_rule()
    both = recognize((faces_dir / "sample/examples/two_people.jpg").read_bytes(), gallery, rule, CFG)
    assert both.outcome == Outcome.IDENTIFIED
    assert sorted(m.person_name or "" for m in both.matches) == ["Biden", "Obama"]
    stranger = recognize((faces_dir / "sample/examples/alex-lacamoire.png").read_bytes(), gallery, rule, CFG)
    assert stranger.outcome == Outcome.UNKNOWN_FACES
    nobody = recognize((faces_dir / "extras/no_face/dlib_horses.jpg").read_bytes(), gallery, rule, CFG)
    assert nobody.outcome == Outcome.NO_FACE
    assert set(both.timings_ms) == {"decode", "detect", "encode", "match"}


# --------------------------------------------------------------------------- memory bounds

_PEAK = """
import resource, sys
from pathlib import Path
from recognizer.core import DetectionConfig, recognize
from recognizer.gallery import Gallery, default_rule
small, big = Path(sys.argv[1]).read_bytes(), Path(sys.argv[2]).read_bytes()
recognize(small, Gallery(), default_rule(), DetectionConfig())  # dlib, its models, numpy: loaded
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = recognize(big, Gallery(), default_rule(), DetectionConfig())
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after - before, result.width, result.height)
"""


def test_a_huge_mostly_uniform_png_is_recognized_within_the_memory_budget(
    faces_dir: Path, tmp_path: Path
) -> None:
    """The 7,070 x 7,070 RGBA PNG of the issue (212 KB) peaked 1.2 GiB inside recognize()."""
    big = Image.new("RGBA", (7070, 7070), (255, 255, 255, 255))
    big.paste((0, 0, 0, 255), (100, 100, 400, 400))
    big.save(tmp_path / "big.png")
    del big
    assert (tmp_path / "big.png").stat().st_size < 300_000
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _PEAK,
            str(faces_dir / "sample/examples/obama.jpg"),
            str(tmp_path / "big.png"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    growth_kib, width, height = map(int, done.stdout.split())
    # The worker's share of the 1 GiB limit for one image (see recognizer.core.MAX_PIXELS).
    assert growth_kib < 512 * 1024, f"recognize() grew by {growth_kib // 1024} MiB"
    assert (width, height) == (7070, 7070)


def test_a_large_jpeg_is_decoded_reduced_and_its_boxes_are_in_original_pixels(faces_dir: Path) -> None:
    photo = Image.open(faces_dir / "sample/examples/obama.jpg")
    buf = io.BytesIO()
    photo.resize((photo.width * 4, photo.height * 4)).save(buf, "JPEG", quality=90)  # 16.6 MP
    small = recognize((faces_dir / "sample/examples/obama.jpg").read_bytes(), Gallery(), default_rule(), CFG)
    cfg = DetectionConfig(max_decoded_pixels=2_000_000)
    decoded = load_image(buf.getvalue(), max_decoded_pixels=cfg.max_decoded_pixels)
    assert decoded.shape[0] * decoded.shape[1] <= 2_000_000
    big = recognize(buf.getvalue(), Gallery(), default_rule(), cfg)
    assert (big.width, big.height) == (photo.width * 4, photo.height * 4)
    assert len(big.faces) == len(small.faces) == 1
    for side in ("top", "right", "bottom", "left"):
        assert abs(getattr(big.faces[0].box, side) - 4 * getattr(small.faces[0].box, side)) < 40


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "1", "I;16", "LA"])
def test_every_pixel_mode_can_be_reduced(mode: str) -> None:
    decoded = decode_image(_png(mode, (400, 300)), max_decoded_pixels=10_000)
    assert decoded.rgb.shape[0] * decoded.rgb.shape[1] <= 10_000
    assert decoded.rgb.shape[2] == 3
    assert (decoded.width, decoded.height) == (400, 300)
    assert decoded.scale == 400 / decoded.rgb.shape[1]
