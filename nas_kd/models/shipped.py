"""Teachers that ship with nas-kd: trained once by the project's own command, verified by hash.

``nas_kd/shipped/manifest.json`` lists, per dataset, one checkpoint in ``nas_kd/shipped/`` with its
SHA-256, the command and recipe that made it, its accuracies, its seed (the validation split it
left out, which the search must use), the versions and the machine. `--teacher default` (the
search's default) means the shipped teacher of the dataset when there is one; a registry name
(`resnet20`) means a teacher trained and cached on this machine instead. A shipped file whose hash
differs from the manifest is refused: it is not the teacher the figures in the docs came from.
`scripts/ship_teacher.py` writes a new entry from a cached checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nas_kd.errors import UserError

__all__ = ["SHIPPED_DIR", "DEFAULT_SPEC", "ShippedTeacher", "shipped_teachers", "shipped_teacher", "verified_path"]

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "shipped"
DEFAULT_SPEC = "default"
FALLBACK_ARCH = "resnet20"  # what "default" trains when no teacher ships for the dataset


@dataclass(frozen=True)
class ShippedTeacher:
    dataset: str
    file: str  # name inside SHIPPED_DIR
    sha256: str
    arch: str
    test_accuracy: float
    val_accuracy: float
    seed: int
    reconstruction: bool
    command: str
    recipe: dict
    train_seconds: float
    hardware: str
    versions: dict
    created: str

    @property
    def path(self) -> Path:
        return SHIPPED_DIR / self.file


def shipped_teachers() -> dict[str, ShippedTeacher]:
    manifest = SHIPPED_DIR / "manifest.json"
    if not manifest.is_file():
        return {}
    entries = json.loads(manifest.read_text())["teachers"]
    return {name: ShippedTeacher(**entry) for name, entry in entries.items()}


def shipped_teacher(dataset: str) -> ShippedTeacher | None:
    return shipped_teachers().get(dataset)


def verified_path(entry: ShippedTeacher) -> Path:
    """The shipped checkpoint, once its bytes match the manifest; a one-line `UserError` if not."""
    from nas_kd.files import digest

    if not entry.path.is_file():
        raise UserError(f"the shipped teacher {entry.path} is missing: reinstall nas-kd, or pass --teacher resnet20 to train one here")
    if digest(entry.path) != entry.sha256:
        raise UserError(f"the shipped teacher {entry.path} does not match its manifest (SHA-256 differs): reinstall nas-kd, or pass --teacher resnet20 to train one here")
    return entry.path
