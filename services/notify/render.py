"""Wording: the templates in `templates/<lang>/<kind>.md.j2` turned into subject, text and HTML.

A message template renders markdown whose first line is the subject (`# ...`). The markdown is
the plain-text part of an email and the body of DingTalk/WeCom robot messages; the HTML part
is the same markdown rendered into `templates/email.html.j2`.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup

from shared.directory import Directory

TEMPLATES = Path(__file__).resolve().parent / "templates"
LANGUAGES = ("zh", "en")


def yuan(amount: Any, lang: str) -> str:
    """Money as people in the county say it: 1.5亿元, 2500万元; or CNY 150,000,000."""
    try:
        value = Decimal(str(amount))
    except (InvalidOperation, ValueError):
        return str(amount)
    if lang != "zh":
        return f"CNY {value:,.0f}"
    if value >= 100_000_000:
        return f"{(value / 100_000_000).quantize(Decimal('0.01')).normalize():f}亿元"
    if value >= 10_000:
        return f"{(value / 10_000).quantize(Decimal('0.01')).normalize():f}万元"
    return f"{value:,.2f}元"


# What lets text build links, images, raw HTML or headings in markdown, as its full-width
# form: unit-supplied text reads the same and builds nothing, in markdown-it, DingTalk and
# WeCom alike (the robots do not honour backslash escapes). Ids keep their `_` and `-`.
_INERT = str.maketrans(
    {"[": "［", "]": "］", "<": "＜", ">": "＞", "#": "＃", "\n": " ", "\r": " "}
)


def inert(value: Any) -> Any:
    """Jinja finalize: every interpolated value is text, never markup, unless marked safe."""
    if value is None:
        return ""
    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    return value.translate(_INERT)


class Renderer:
    def __init__(self, directory: Directory, templates: Path = TEMPLATES) -> None:
        self.directory = directory
        self.env = Environment(
            loader=FileSystemLoader(templates),
            autoescape=select_autoescape(["html", "html.j2"]),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            # Compiled once: the templates ship with the code, so there is no need to stat
            # each file again for every message.
            auto_reload=False,
            finalize=inert,
        )
        self.vocabulary: dict[str, dict[str, dict[str, str]]] = yaml.safe_load(
            (templates / "vocabulary.yaml").read_text(encoding="utf-8")
        )
        self.md = MarkdownIt("commonmark", {"html": False}).enable(
            "table"
        )  # titles are data: no raw HTML
        self._templates: dict[tuple[str, str], Any] = {}
        self._helpers: dict[str, dict[str, Any]] = {}

    def helpers(self, lang: str) -> dict[str, Any]:
        def name(code: str | None) -> str:
            if not code:
                return ""
            entry = self.directory.units.get(code) or self.directory.leaders.get(code)
            if entry is None:
                return inert(code)  # a code from a message, not from the directory
            return Markup(entry.name_zh if lang == "zh" else entry.name_en)

        def term(group: str, code: str | None) -> str:
            found = self.vocabulary.get(group, {}).get(code or "", {}).get(lang)
            return Markup(found) if found else inert(str(code))

        return {
            "name": name,
            "term": term,
            "yuan": lambda a: Markup(yuan(a, lang)),
            "lang": lang,
        }

    def message(
        self, kind: str, lang: str, data: dict[str, Any], recipient: str
    ) -> tuple[str, str]:
        """(subject, markdown body) of one message in `lang`."""
        lang = lang if lang in LANGUAGES else "zh"
        template = self._templates.get((lang, kind))
        if template is None:
            template = self._templates[(lang, kind)] = self.env.get_template(f"{lang}/{kind}.md.j2")
        helpers = self._helpers.get(lang)
        if helpers is None:  # pure functions of the language: built once per language
            helpers = self._helpers[lang] = self.helpers(lang)
        text = template.render(**data, recipient=recipient, **helpers)
        first, _, rest = text.strip().partition("\n")
        return first.lstrip("#").strip(), rest.strip() + "\n"

    def email_html(self, subject: str, body: str, lang: str, cause: str) -> str:
        return self.env.get_template("email.html.j2").render(
            subject=subject, body_html=Markup(self.md.render(body)), lang=lang, cause=cause
        )

    def template(self, name: str) -> Any:
        return self.env.get_template(name)
