"""Reading the folder layouts the CLI accepts (pure, unit-tested)."""

from __future__ import annotations

import contextlib
import re
import shutil
import tarfile
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".pgm", ".ppm", ".tif", ".tiff"}
)
_NUMBERED = re.compile(r"^(?P<name>.+?)[_-]?\d+$")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def people_in(folder: Path) -> dict[str, list[Path]]:
    """Map person name -> photos, from either layout (both may be mixed):

    * ``<folder>/<person>/<image>``: the sub-folder names the person;
    * ``<folder>/<person>_1.jpg`` (the old known-people folder): the file name without
      its trailing number names the person (``Barack_Obama_2.jpg`` -> ``Barack Obama``).

    Underscores become spaces. Raises NotADirectoryError if ``folder`` is not a folder.
    """
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    found: dict[str, list[Path]] = defaultdict(list)
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            photos = sorted(p for p in entry.iterdir() if is_image(p))
            if photos:
                found[_display(entry.name)].extend(photos)
        elif is_image(entry):
            m = _NUMBERED.match(entry.stem)
            found[_display(m.group("name") if m else entry.stem)].append(entry)
    return dict(found)


def images_in(folder: Path) -> list[Path]:
    """Every image file under ``folder``, recursively, in a stable order."""
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if is_image(p))


def images_of(paths: list[Path]) -> list[Path]:
    """The files to submit: each file named as it is (whatever its suffix: the service
    decides by content), and every image under each folder. Raises FileNotFoundError
    for a path that does not exist."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(images_in(path))
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return found


#: Archive names :func:`unpacked` opens (a tar may be compressed: gzip, bzip2, xz).
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


@contextlib.contextmanager
def unpacked(source: Path) -> Iterator[Path]:
    """The folder of people in ``source``: a folder as it is, or a .zip or .tar archive of
    one unpacked into a temporary folder (removed afterwards). An archive that wraps the
    layout in folders of one entry each (``lfw.tgz`` holds ``lfw/<person>/...``) yields the
    innermost of them that holds more than one thing or a photo.

    Nothing is written outside the temporary folder: members with absolute paths or
    ``..`` are refused (tar's ``data`` filter; zip members are checked), links of a zip
    are not followed. Raises FileNotFoundError for a missing ``source``, ValueError for a
    file that is not such an archive.
    """
    if source.is_dir():
        yield source
        return
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    with tempfile.TemporaryDirectory(prefix="facestream-import-") as tmp:
        root = Path(tmp)
        try:
            if zipfile.is_zipfile(source):
                _unzip(source, root)
            elif tarfile.is_tarfile(source):
                with tarfile.open(source) as archive:
                    archive.extractall(root, filter="data")
            else:
                raise ValueError(f"{source} is neither a folder nor a .zip or .tar archive")
        except (tarfile.TarError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{source}: cannot unpack it ({exc})") from None
        yield _innermost(root)


def _unzip(source: Path, into: Path) -> None:
    with zipfile.ZipFile(source) as archive:
        for member in archive.infolist():
            target = (into / member.filename).resolve()
            if not target.is_relative_to(into.resolve()):
                raise ValueError(f"{source}: member {member.filename!r} would land outside the folder")
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)


def _innermost(folder: Path) -> Path:
    """``folder``, or the one sub-folder it holds if that is all it holds and that one
    holds sub-folders too (a wrapper, not a person's folder), repeatedly."""
    while True:
        entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        inner = entries[0]
        if not any(e.is_dir() for e in inner.iterdir()):
            return folder  # one person's folder: ``folder`` is the layout
        folder = inner


def _display(name: str) -> str:
    return name.replace("_", " ").strip() or name
