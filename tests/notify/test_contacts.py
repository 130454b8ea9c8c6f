"""deploy/contacts.yaml: checked against the unit directory, errors naming the entry and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from investflow.main import main as investflow
from services.notify.contacts import ContactsError, parse_contacts, read_contacts
from shared.settings import REPO_ROOT
from tests.notify.support import DIRECTORY


def test_the_shipped_file_is_valid_and_covers_every_unit_and_leader() -> None:
    entries = read_contacts(REPO_ROOT / "deploy" / "contacts.yaml", DIRECTORY)
    assert {e.code for e in entries} == set(DIRECTORY.units) | set(DIRECTORY.leaders)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "{code: TS99, email: a@b.example}",
            "contact TS99: code: 'TS99' is not in the unit directory",
        ),
        (
            "{code: TS01, email: not-an-address}",
            "contact TS01: email: 'not-an-address' is not an email address",
        ),
        ("{code: TS01}", "contact TS01: no channel"),
        ("{code: TS01, emial: a@b.example}", "contact TS01: emial: unknown key"),
        (
            "{code: TS01, dingtalk: {url: ftp://x}}",
            "contact TS01: dingtalk.url: 'ftp://x' is not an http(s) URL",
        ),
        ("{code: TS01, language: fr, email: a@b.example}", "contact TS01: language:"),
        (
            "{code: L01, wecom: {url: 'https://x.example/${NO_SUCH_VAR_X}'}}",
            "contact L01.wecom.url: environment variable NO_SUCH_VAR_X is not set",
        ),
    ],
)
def test_a_bad_entry_is_named_with_its_key(entry: str, message: str) -> None:
    with pytest.raises(ContactsError) as err:
        parse_contacts(f"contacts:\n  - {entry}\n", "c.yaml", DIRECTORY)
    assert message in str(err.value)


def test_duplicates_and_env_expansion(monkeypatch) -> None:
    with pytest.raises(ContactsError, match="contact TS01: listed twice"):
        parse_contacts(
            "contacts:\n  - {code: TS01, email: a@b.example}\n  - {code: TS01, email: c@d.example}\n",
            "c.yaml",
            DIRECTORY,
        )
    monkeypatch.setenv("ROBOT_TOKEN", "abc")
    [entry] = parse_contacts(
        "contacts:\n  - {code: CENTER, dingtalk: {url: 'https://r.example/send?access_token=${ROBOT_TOKEN}'}}\n",
        "c.yaml",
        DIRECTORY,
    )
    assert entry.dingtalk is not None and entry.dingtalk.url.endswith("access_token=abc")


def test_contacts_load_command(tmp_path: Path, capsys) -> None:
    db = f"sqlite:///{tmp_path / 'n.db'}"
    assert investflow(["contacts", "load", "--database-url", db]) == 0
    assert "loaded 22 contacts" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("contacts:\n  - {code: NOPE, email: x@y.example}\n", encoding="utf-8")
    assert investflow(["contacts", "load", "--file", str(bad), "--database-url", db]) == 1
    assert "contact NOPE: code: 'NOPE' is not in the unit directory" in capsys.readouterr().err
