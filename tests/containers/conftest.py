"""The images for tests/containers, built (or found current) once per session."""

from __future__ import annotations

import pytest

from tests.containers.podman import script


@pytest.fixture(scope="session")
def images() -> None:
    """The local base, the project image (rebuilt when its sources changed) and the
    stand-ins: scripts/podman.sh images (installs podman first when missing)."""
    script("images")
