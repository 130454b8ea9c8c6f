"""The directory of units and county leaders (deploy/units.yaml): who may report and be credited."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class UnitEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,31}$")
    kind: Literal["center", "park", "township", "department"]
    name_zh: str
    name_en: str


class LeaderEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,31}$")
    name_zh: str
    name_en: str
    # `principal`: one of the county's principal leaders (县委主要领导), who receive the
    # committee's minutes (实施方案·联审联批：形成并印发会议纪要报县委主要领导).
    roles: list[Literal["principal"]] = []


class DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    units: list[UnitEntry]
    leaders: list[LeaderEntry] = []


@dataclass(frozen=True)
class Directory:
    units: dict[str, UnitEntry]
    leaders: dict[str, LeaderEntry]

    CENTER = "CENTER"

    def is_unit(self, code: str) -> bool:
        return code in self.units

    def is_leader(self, code: str) -> bool:
        return code in self.leaders

    def is_landing_area(self, code: str) -> bool:
        """Projects land in a township/street or a park (乡镇街道/园区)."""
        entry = self.units.get(code)
        return entry is not None and entry.kind in ("township", "park")

    def principal_leaders(self) -> tuple[str, ...]:
        """县委主要领导: the leaders whose role is `principal`, in directory order."""
        return tuple(c for c, e in self.leaders.items() if "principal" in e.roles)

    def name(self, code: str) -> str:
        entry = self.units.get(code) or self.leaders.get(code)
        return f"{entry.name_zh} ({entry.name_en})" if entry else code


class DirectoryError(ValueError):
    pass


def load_directory(path: Path) -> Directory:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        parsed = DirectoryFile.model_validate(raw)
    except FileNotFoundError as exc:
        raise DirectoryError(f"{path}: no such file") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise DirectoryError(f"{path}: {exc}") from exc
    codes = [u.code for u in parsed.units] + [leader.code for leader in parsed.leaders]
    dupes = sorted({c for c in codes if codes.count(c) > 1})
    if dupes:
        raise DirectoryError(f"{path}: codes listed twice: {', '.join(dupes)}")
    if Directory.CENTER not in {u.code for u in parsed.units}:
        raise DirectoryError(f"{path}: the Center (code CENTER) must be listed")
    return Directory(
        units={u.code: u for u in parsed.units},
        leaders={leader.code: leader for leader in parsed.leaders},
    )
