"""Reading ruleset files: strict YAML, the schema, the semantic checks, and the checks that
span files (one version in force per day and ruleset id).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from .check import check
from .model import CONDITION_TAGS, AnyRuleset, Problem, Ruleset, RulesetError

_BOOL_TAG = "tag:yaml.org,2002:bool"


class StrictLoader(yaml.SafeLoader):
    """YAML as maintainers mean it.

    YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans, so a test case's `on: 2022-06-30`
    would silently become `True: ...`; only true/false are booleans here. A key written
    twice in one mapping is an error instead of the last one quietly winning.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` may be overridden by the keys written beside it
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is written twice / 字段重复", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str, file: str) -> Any:
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RulesetError(
            [Problem(file, where, "", f"not valid YAML: {problem} / YAML 格式错误")]
        ) from exc


_ZH = {
    "extra_forbidden": "unknown key (a typo?) / 未知字段（拼写错误？）",
    "missing": "required / 必填",
}
_HIDDEN = {*CONDITION_TAGS.values(), "terminate", "route", "require_materials", "not_recognised"}


def _key(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in _HIDDEN and not str(part).startswith("function-"):
            out += f".{part}" if out else str(part)
    return out


def pydantic_problems(
    exc: ValidationError, file: str, data: Any, *, items: str = "rules", label: str = "rule"
) -> list[Problem]:
    """Pydantic's errors as Problems: `rules[3]...` becomes `rule <its id>`, key after it."""
    problems = []
    for err in exc.errors():
        loc = list(err["loc"])
        if loc and loc[0] in ("review", "scoring"):
            loc = loc[1:]  # the ruleset-id discriminator's tag
        where = ""
        if len(loc) >= 2 and loc[0] == items and isinstance(loc[1], int):
            entries = data.get(items) if isinstance(data, Mapping) else None
            entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
            ident = (
                entry.get("id" if items == "rules" else "name")
                if isinstance(entry, Mapping)
                else None
            )
            where = (
                f'{label} "{ident}"'
                if label == "case" and ident
                else (f"{label} {ident}" if ident else f"{items}[{loc[1]}]")
            )
            loc = loc[2:]
        message = _ZH.get(err["type"], err["msg"].removeprefix("Value error, "))
        if err["type"] == "union_tag_invalid":
            message += " / 取值无效"
        problems.append(Problem(file, where, _key(loc), message))
    return problems


_RULESET = TypeAdapter(Ruleset)


def ruleset_from_data(data: Any, file: str) -> AnyRuleset:
    """A ruleset from parsed YAML/JSON, or RulesetError with every problem found."""
    if not isinstance(data, Mapping):
        raise RulesetError(
            [Problem(file, "", "", "a ruleset file is a mapping (id, version, ...) / 文件须为映射")]
        )
    if data.get("id") not in ("review", "scoring"):
        raise RulesetError(
            [
                Problem(
                    file,
                    "",
                    "id",
                    f"must be review or scoring, not {data.get('id')!r} / 规则集编号须为 review 或 scoring",
                )
            ]
        )
    try:
        ruleset: AnyRuleset = _RULESET.validate_python(data)
    except ValidationError as exc:
        raise RulesetError(pydantic_problems(exc, file, data)) from exc
    problems = check(ruleset, file)
    if problems:
        raise RulesetError(problems)
    return ruleset


def load_text(text: str, file: str = "<published>") -> AnyRuleset:
    return ruleset_from_data(parse_yaml(text, file), file)


def load_file(path: Path | str) -> AnyRuleset:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesetError(
            [Problem(str(path), "", "", f"cannot read: {exc.strerror} / 无法读取")]
        ) from exc
    return load_text(text, str(path))


def ruleset_files(paths: Iterable[Path | str]) -> list[Path]:
    """Files named, plus the *.yaml files directly inside directories named (not `tests/`)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(
                sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            )
        else:
            out.append(path)
    return out


def overlap_problems(
    rulesets: Iterable[tuple[AnyRuleset, str]],
) -> list[Problem]:
    """Two versions of one ruleset id in force on the same day, or one version twice."""
    problems = []
    seen: list[tuple[AnyRuleset, str]] = []
    for ruleset, file in rulesets:
        for other, other_file in seen:
            if other.id != ruleset.id:
                continue
            if other.version == ruleset.version:
                problems.append(
                    Problem(
                        file,
                        "",
                        "version",
                        f"{ruleset.key} is also defined in {other_file} / 版本重复",
                    )
                )
            elif other.effective.overlaps(ruleset.effective):
                problems.append(
                    Problem(
                        file,
                        "",
                        "effective",
                        f"{ruleset.key} ({ruleset.effective}) overlaps {other.key} "
                        f"({other.effective}) in {other_file}: one version per day / 生效期重叠",
                    )
                )
        seen.append((ruleset, file))
    return problems


def load_paths(paths: Iterable[Path | str]) -> list[tuple[AnyRuleset, str]]:
    """Every ruleset under `paths`, checked together; RulesetError lists all problems."""
    problems: list[Problem] = []
    loaded: list[tuple[AnyRuleset, str]] = []
    files = ruleset_files(paths)
    if not files:
        raise RulesetError(
            [
                Problem(
                    ", ".join(map(str, paths)), "", "", "no ruleset files found / 未找到规则集文件"
                )
            ]
        )
    for file in files:
        try:
            loaded.append((load_file(file), str(file)))
        except RulesetError as exc:
            problems.extend(exc.problems)
    problems.extend(overlap_problems(loaded))
    if problems:
        raise RulesetError(problems)
    return loaded


def with_parameters(
    ruleset: AnyRuleset, overrides: Mapping[str, Any], file: str, where: str
) -> AnyRuleset:
    """The ruleset with some parameter values replaced (a rule test trying a policy change);
    checked again, so an override of the wrong type is refused like a bad file."""
    unknown = sorted(set(overrides) - set(ruleset.parameters))
    if unknown:
        known = ", ".join(sorted(ruleset.parameters))
        raise RulesetError(
            [
                Problem(
                    file,
                    where,
                    f"parameters.{name}",
                    f"{ruleset.key} has no such parameter (has: {known}) / 无此参数",
                )
                for name in unknown
            ]
        )
    params = {
        name: (p.model_copy(update={"value": overrides[name]}) if name in overrides else p)
        for name, p in ruleset.parameters.items()
    }
    changed = ruleset.model_copy(update={"parameters": params})
    problems = check(changed, file)
    if problems:
        raise RulesetError(
            [Problem(file, where, f"parameters ({p.where}: {p.key})", p.message) for p in problems]
        )
    return changed
