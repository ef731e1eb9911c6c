"""Reading the folder layouts the CLI accepts (pure, unit-tested)."""

from __future__ import annotations

import re
from collections import defaultdict
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


def _display(name: str) -> str:
    return name.replace("_", " ").strip() or name
