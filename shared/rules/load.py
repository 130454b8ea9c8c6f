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

from ..pydantic_zh import TYPE_ERRORS, TYPE_NAMES, bilingual, shown
from .check import check
from .model import CONDITION_TAGS, RULESET_IDS, AnyRuleset, Problem, Ruleset, RulesetError

RULESET_IDS_AND_TESTS = (*RULESET_IDS, "ReviewTests", "ScoringTests")

_BOOL_TAG = "tag:yaml.org,2002:bool"


# Limits on a ruleset or rule-test file (issue 11.11): a file of a few KB may not cost
# seconds or gigabytes. The shipped files are ~10 KB, ~2,000 nodes, ~12 levels deep.
MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 50_000  # after expanding aliases (`*anchor`): stops an alias bomb
MAX_DEPTH = 40  # nested mappings/lists: stops a RecursionError in the checks


# libyaml's parser when present (10x faster; the checks and constructors stay ours).
_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class StrictLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """YAML as maintainers mean it.

    YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans, so a test case's `on: 2022-06-30`
    would silently become `True: ...`; only true/false are booleans here. A key written
    twice in one mapping is an error instead of the last one quietly winning. A date that
    does not exist (2022-13-31) is a located error, not a Python ValueError.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` may be overridden by the keys written beside it
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            try:
                fresh = key not in seen
            except TypeError:  # a list or mapping as a key
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    "a key must be a plain word / 字段名须为简单文字",
                    key_node.start_mark,
                ) from None
            if not fresh:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is written twice / 字段重复", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)  # type: ignore[no-untyped-call]
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{node.value!r} is not a real date ({exc}) / 日期不存在",
                node.start_mark,
            ) from None


StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", StrictLoader.construct_yaml_timestamp)
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

# Punctuation a Chinese keyboard types where YAML needs the ASCII one.
FULL_WIDTH = {
    "：": ":",
    "，": ",",
    "；": ";",
    "（": "(",
    "）": ")",
    "【": "[",
    "】": "]",
    "［": "[",
    "］": "]",
    "｛": "{",
    "｝": "}",
    "“": '"',
    "”": '"',
    "‘": "'",
    "’": "'",
    "－": "-",
    "　": " ",
    "＃": "#",
}


def full_width_hint(text: str) -> str | None:
    """A hint when `text` holds full-width punctuation, naming the character and its fix."""
    for ch in text:
        if ch in FULL_WIDTH:
            ascii_ = FULL_WIDTH[ch]
            if ascii_ == " ":
                return (
                    "hint: a full-width space (Chinese keyboard) must be an ASCII space "
                    "/ 提示：全角空格须改为半角空格"
                )
            return (
                f"hint: the full-width {ch!r} (Chinese keyboard) must be the ASCII `{ascii_}` "
                f"/ 提示：全角“{ch}”须改为半角“{ascii_}”"
            )
    return None


_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
_CN_DIGITS |= {"六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000}
_EN_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "half": 0.5, "double": 2, "twice": 2, "triple": 3,
}  # fmt: skip


def number_in_words(text: str) -> int | float | None:
    """两倍 → 2, 一百万 → 1000000, three → 3; None when `text` is not a number in words."""
    word = text.strip().removesuffix("倍").removesuffix("times").strip().lower()
    if word in _EN_WORDS:
        return _EN_WORDS[word]
    if word == "半":
        return 0.5
    if not word or any(ch not in _CN_DIGITS and ch not in _CN_UNITS for ch in word):
        return None
    total, section, digit = 0, 0, 0
    for ch in word:
        if ch in _CN_DIGITS:
            digit = _CN_DIGITS[ch]
        elif _CN_UNITS[ch] >= 10_000:
            total += (section + digit) * _CN_UNITS[ch]
            section = digit = 0
        else:
            section += (digit or 1) * _CN_UNITS[ch]
            digit = 0
    return total + section + digit


def words_hint(value: Any) -> str | None:
    if isinstance(value, str):
        number = number_in_words(value)
        if number is not None:
            return (
                f"hint: write numbers in digits: {number} / 提示：数字请用阿拉伯数字书写：{number}"
            )
    return None


def line_hint(line: str) -> str | None:
    """A full-width punctuation hint for one source line, where YAML would read the ASCII
    character as structure (a key's colon, a flow list's comma, brackets, indentation);
    Chinese punctuation inside prose and comments is left alone."""
    code = line.split("#", 1)[0]
    head, colon, _ = code.partition(":")
    if "：" in (head if colon else code):
        return full_width_hint("：")
    if code.lstrip(" ").startswith("　"):
        return full_width_hint("　")
    for ch in "【】［］｛｝":
        if ch in code:
            return full_width_hint(ch)
    if re.search(r"[\[{][^\]}]*，", code):
        return full_width_hint("，")
    return None


def _yaml_hint(problem: str, text: str, lines: list[int]) -> str:
    source = text.splitlines()
    if "'\\t'" in problem or any(
        "\t" in source[n - 1].split("#", 1)[0] for n in lines if 0 < n <= len(source)
    ):
        return "; hint: indent with spaces, not tabs / 提示：请用空格缩进，不要用制表符"
    if "expected <block end>" in problem or "did not find expected" in problem:
        return (
            "; hint: check the indentation: the keys of one entry start in the same column "
            "/ 提示：请检查缩进，同一层的字段须左对齐"
        )
    for line in lines:  # the line named, and the one before (YAML often notices late)
        hint = line_hint(source[line - 1]) if 0 < line <= len(source) else None
        if hint:
            return f"; line {line}: {hint}"
    return ""


def _guard(text: str, file: str) -> None:
    """Refuse a file too big, too deep or expanding too far, before building anything."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        raise RulesetError(
            [
                Problem(
                    file,
                    "",
                    "",
                    f"the file is {size:,} bytes; at most {MAX_FILE_BYTES:,} are read "
                    f"/ 文件过大（{size:,} 字节，上限 {MAX_FILE_BYTES:,}）",
                )
            ]
        )
    depth = 0
    sizes: dict[str, int] = {}  # anchor -> nodes it stands for, aliases expanded
    stack: list[list[Any]] = [[None, 0]]  # [anchor, nodes so far] per open collection
    total = 0
    for event in yaml.parse(text, Loader=StrictLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise RulesetError(
                    [
                        Problem(
                            file,
                            "",
                            "",
                            f"nested more than {MAX_DEPTH} levels deep / 嵌套超过 {MAX_DEPTH} 层",
                            mark.line + 1,
                            mark.column + 1,
                        )
                    ]
                )
            stack.append([event.anchor, 1])
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            anchor, count = stack.pop()
            if anchor is not None:
                sizes[anchor] = count
            stack[-1][1] += count
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                sizes[event.anchor] = 1
            stack[-1][1] += 1
        elif isinstance(event, yaml.AliasEvent):
            stack[-1][1] += sizes.get(event.anchor or "", 1)
        else:
            continue
        total = sum(c for _, c in stack)
        if total > MAX_NODES:
            mark = event.start_mark
            raise RulesetError(
                [
                    Problem(
                        file,
                        "",
                        "",
                        f"more than {MAX_NODES:,} values once aliases (*name) are expanded "
                        f"/ 展开别名后超过 {MAX_NODES:,} 个值",
                        mark.line + 1,
                        mark.column + 1,
                    )
                ]
            )


def parse_located(text: str, file: str) -> tuple[Any, yaml.Node | None]:
    """The data and its node tree (for line numbers), or a located RulesetError."""
    try:
        _guard(text, file)
        loader = StrictLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            getattr(loader, "dispose", lambda: None)()
        return data, node
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if context and "while" not in context:
            problem = f"{context}: {problem}"
        seen = [m.line + 1 for m in (getattr(exc, "context_mark", None), mark) if m is not None]
        near = sorted({n for m in seen for n in (m, m - 1)}, reverse=True)
        message = problem if " / " in problem else f"not valid YAML: {problem} / YAML 格式错误"
        raise RulesetError(
            [Problem(file, "", "", message + _yaml_hint(problem, text, near), line, column)]
        ) from None
    except RecursionError:
        raise RulesetError([Problem(file, "", "", "nested too deep / 嵌套过深")]) from None
    except UnicodeError as exc:  # a lone surrogate: text no editor should have produced
        raise RulesetError(
            [
                Problem(
                    file,
                    "",
                    "",
                    f"contains a character that is not valid Unicode ({exc.reason}) "
                    "/ 含有无效的字符",
                )
            ]
        ) from None


def parse_yaml(text: str, file: str) -> Any:
    return parse_located(text, file)[0]


# --- where a problem is in the text ----------------------------------------------------------

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def key_parts(key: str) -> list[str | int]:
    """`when.all[1].gte` -> ["when", "all", 1, "gte"]."""
    return [int(i) if i else name for name, i in _PART.findall(key)]


def node_at(root: yaml.Node | None, parts: Iterable[str | int]) -> yaml.Node | None:
    """The node a path leads to (a mapping entry: its key), as deep as the path exists."""
    node, found = root, root
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            entry = next(
                ((k, v) for k, v in node.value if str(getattr(k, "value", "")) == str(part)), None
            )
            if entry is None:
                return found
            found, node = entry[0], entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return found
            found = node = node.value[part]
        else:
            return found
    return found


def _where_parts(data: Any, where: str, items: str) -> list[str | int]:
    """`rule major_project` / `case "x"` / `parameter p` as a path into the file."""
    label, _, ident = where.partition(" ")
    ident = ident.strip('"')
    if label in ("rule", "case") and isinstance(data, Mapping):
        entries = data.get("rules" if label == "rule" else "cases")
        field_ = "id" if label == "rule" else "name"
        if isinstance(entries, list):
            for i, entry in enumerate(entries):
                if isinstance(entry, Mapping) and str(entry.get(field_)) == ident:
                    return ["rules" if label == "rule" else "cases", i]
    if label == "parameter":
        return ["parameters", ident]
    match = re.fullmatch(r"(\w+)\[(\d+)\]", where)
    if match:
        return [match[1], int(match[2])]
    return []


def locate(problems: list[Problem], data: Any, root: yaml.Node | None, text: str) -> list[Problem]:
    """The problems with line and column, and a full-width punctuation hint where it applies."""
    out = []
    lines = text.splitlines()
    for p in problems:
        if p.line is not None or root is None:
            out.append(p)
            continue
        node = node_at(root, [*_where_parts(data, p.where, "rules"), *key_parts(p.key)])
        line = node.start_mark.line + 1 if node is not None else None
        column = node.start_mark.column + 1 if node is not None else None
        message = p.message
        if "提示" not in message:
            quoted = re.findall(r"'([^']{1,20})'", message)
            hint = next(filter(None, map(words_hint, quoted)), None)
            if hint is None and line is not None:
                hint = line_hint(lines[line - 1] if line <= len(lines) else "")
            if hint:
                message += f"; {hint}"
        out.append(Problem(p.file, p.where, p.key, message, line, column))
    return out


# --- pydantic's messages, in the project's words ---------------------------------------------

_ZH = {
    "extra_forbidden": "unknown key (a typo?) / 未知字段（拼写错误？）",
    "missing": "required / 必填",
}
# The loader's own words for a few types (YAML, not JSON), over the shared table.
_KINDS = {k: f"{en} / {zh}" for k, (en, zh) in TYPE_NAMES.items()} | {
    "date": "a date like 2022-06-30, without quotes / 日期（如 2022-06-30，不加引号）",
    "ParamRef": "a parameter reference {param: name} / 参数引用 {param: 名称}",
}
_TYPE_ERRORS = TYPE_ERRORS
_HIDDEN = {*CONDITION_TAGS.values(), "terminate", "route", "require_materials", "not_recognised"}


def _union_member(part: Any) -> bool:
    """A union member's name in an error location (`int`, `ParamRef`, `list[str]`)."""
    text = str(part)
    return (
        text in ("int", "float", "str", "bool", "date", "none")
        or "[" in text
        or (text[:1].isupper() and text.isidentifier())
    )


def _key(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in _HIDDEN and not str(part).startswith("function-"):
            out += f".{part}" if out else str(part)
    return out


_shown = shown


def _message(errors: list[dict[str, Any]]) -> str:
    """One message for the errors pydantic gives at one place (one per union member)."""
    kinds = []
    for err in errors:
        kind = _TYPE_ERRORS.get(err["type"])
        if kind is None:
            break
        kinds.append("ParamRef" if "ParamRef" in err["loc"] else kind)
    value = errors[0].get("input")
    if len(kinds) == len(errors):
        if "int" in kinds and "float" in kinds:
            kinds.remove("int")
        expected = " or ".join(dict.fromkeys(_KINDS[k].split(" / ")[0] for k in kinds))
        expected_zh = "或".join(dict.fromkeys(_KINDS[k].split(" / ")[1] for k in kinds))
        message = f"must be {expected}, not {_shown(value)} / 须为{expected_zh}"
        if kinds == ["date"] and isinstance(value, str):
            message += "; hint: remove the quotes around the date / 提示：日期不要加引号"
    else:
        err = next((e for e in errors if e["type"] not in _TYPE_ERRORS), errors[0])
        kind = err["type"]
        if kind in _ZH:
            message = _ZH[kind]
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            message = f"must be one of {expected}, not {_shown(value)} / 取值须为其中之一"
        elif kind == "string_pattern_mismatch":
            message = (
                f"{_shown(value)} is not allowed here: use lowercase letters, digits and _, "
                "starting with a letter (e.g. foreign_multiplier) / 须为小写字母、数字和下划线"
            )
        elif kind in ("too_short", "string_too_short"):
            message = "must not be empty / 不能为空"
        elif kind == "value_error":
            message = err["msg"].removeprefix("Value error, ")
        elif kind == "union_tag_invalid":
            message = err["msg"] + " / 取值无效"
        elif kind == "condition":
            message = err["msg"]
        else:
            message = bilingual(err)
    hint = words_hint(value) or (full_width_hint(value) if isinstance(value, str) else None)
    return f"{message}; {hint}" if hint and "提示" not in message else message


def pydantic_problems(
    exc: ValidationError, file: str, data: Any, *, items: str = "rules", label: str = "rule"
) -> list[Problem]:
    """Pydantic's errors as Problems: `rules[3]...` becomes `rule <its id>`, key after it;
    the errors a union gives at one place (one per member) become one message."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for err in exc.errors():
        loc = list(err["loc"])
        if loc and loc[0] in RULESET_IDS_AND_TESTS:
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
        loc = [part for part in loc if not _union_member(part)]
        grouped.setdefault((where, _key(loc)), []).append(err)
    problems = []
    for (where, key), errors in grouped.items():
        message = _message(errors)
        if errors[0]["type"] == "extra_forbidden":
            bad = str(errors[0]["loc"][-1])
            hint = full_width_hint(bad)
            if hint:
                message += f"; {hint}"
        problems.append(Problem(file, where, key, message))
    return problems


_RULESET = TypeAdapter(Ruleset)


def ruleset_from_data(data: Any, file: str) -> AnyRuleset:
    """A ruleset from parsed YAML/JSON, or RulesetError with every problem found."""
    if not isinstance(data, Mapping):
        raise RulesetError(
            [Problem(file, "", "", "a ruleset file is a mapping (id, version, ...) / 文件须为映射")]
        )
    if data.get("id") not in RULESET_IDS:
        ids = ", ".join(RULESET_IDS)
        raise RulesetError(
            [
                Problem(
                    file,
                    "",
                    "id",
                    f"must be one of {ids}, not {_shown(data.get('id'))} / 规则集编号须为 {ids} 之一",
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
    """A checked ruleset from YAML text; every problem carries its line and column."""
    data, root = parse_located(text, file)
    try:
        return ruleset_from_data(data, file)
    except RulesetError as exc:
        raise RulesetError(locate(exc.problems, data, root, text)) from None
    except RecursionError:
        raise RulesetError([Problem(file, "", "", "nested too deep / 嵌套过深")]) from None


def load_file(path: Path | str) -> AnyRuleset:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesetError(
            [Problem(str(path), "", "", f"cannot read: {exc.strerror} / 无法读取")]
        ) from exc
    except UnicodeDecodeError as exc:
        raise RulesetError(
            [Problem(str(path), "", "", f"not UTF-8 text ({exc.reason}) / 文件须为 UTF-8 编码")]
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
    for problem in overlap_problems(loaded):
        problems.append(_located_in_file(problem))
    if problems:
        raise RulesetError(problems)
    return loaded


def _located_in_file(problem: Problem) -> Problem:
    """A problem found across files, with the line of its key in its own file."""
    try:
        text = Path(problem.file).read_text(encoding="utf-8")
        data, root = parse_located(text, problem.file)
    except (OSError, UnicodeDecodeError, RulesetError):
        return problem
    return locate([problem], data, root, text)[0]


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
