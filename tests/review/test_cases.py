"""Review's write path on a real database, without NATS: what each event announces.

Funds and milestone events re-run recognition without new facts; the result is remembered
per process (cases.py), so these tests pin down that nothing is announced that would not
have been, and that a version published in between is still applied on the next event.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from samples.workload import PROOFS as WORKLOAD_PROOFS
from services.review import handlers, store
from services.review.cases import apply
from shared import subjects
from shared.contract import FundsArrived
from shared.db import create_tables, make_engine, unit_of_work
from shared.rules import RulesetRegistry
from tests.helpers import lead, uid

ROOT = Path(__file__).resolve().parents[2]
PROOFS = list(WORKLOAD_PROOFS)


class Review:
    def __init__(self, database_url: str, rules: RulesetRegistry) -> None:
        self.engine = make_engine(database_url)
        create_tables(self.engine, store.TABLES)
        self.rules = rules

    def send(self, kind: str, project_id: str, data: dict[str, Any], **kw: Any) -> list[dict]:
        event = {"event_id": f"{kind}:{uid()}", "project_id": project_id, "data": data, **kw}
        with unit_of_work(self.engine) as session:
            rows = apply(session, f"project.{kind}", event, self.rules)
            return [{"subject": subjects.event_type(r.subject), **json.loads(r.body)} for r in rows]

    def funds(self, project_id: str, voucher: bool = False) -> list[dict]:
        data = {
            "project_id": project_id,
            "funds_id": uid(),
            "amount": "1000000",
            "currency": "CNY",
            "arrived_on": "2022-05-10",
            "form": "cash",
        }
        # A voucher files a funds_voucher document (funds_voucher_from_funds_record).
        data["voucher"] = {"kind": "bank_receipt", "ref": f"BR-{data['funds_id']}"}
        if voucher:
            return self.send("funds", project_id, data)
        # The contract requires a voucher: a record without one (nothing filed from it) is
        # built past validation, as only a handler's caller could.
        event = FundsArrived.model_validate(self.envelope("funds", project_id, data))
        event = event.model_copy(update={"data": event.data.model_copy(update={"voucher": None})})
        with unit_of_work(self.engine) as session:
            rows = handlers.handle(session, "project.funds", event, self.rules)
            return [{"subject": subjects.event_type(r.subject), **json.loads(r.body)} for r in rows]

    @staticmethod
    def envelope(kind: str, project_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "event_id": f"{kind}:{uid()}",
            "project_id": project_id,
            "data": data,
            "unit": "",
            "idempotency_key": "",
            "received_at": dt.datetime.now(dt.UTC),
        }


@pytest.fixture
def rules() -> Iterator[RulesetRegistry]:
    with RulesetRegistry.from_paths([ROOT / "rulesets"]) as registry:
        yield registry


@pytest.fixture
def review(database_url: str, rules: RulesetRegistry) -> Iterator[Review]:
    r = Review(database_url, rules)
    yield r
    r.engine.dispose()


def recognitions(events: list[dict]) -> list[dict]:
    return [e for e in events if subjects.event_type(e["subject"]) == "review.recognition"]


def test_funds_announce_nothing_new_until_a_published_version_decides_otherwise(
    review: Review, rules: RulesetRegistry
) -> None:
    # Every landing proof but the progress images: not recognised, blocked by landing_proofs.
    filed = [t for t in PROOFS if t != "progress_images"]
    data = lead(
        "TS01", planned_investment="50000000", documents=[{"type": t, "ref": t} for t in filed]
    )
    pid = f"TS01-{data['lead_id']}"
    [first] = recognitions(review.send("lead", pid, data))
    assert first["recognized"] is False and first["missing_proofs"] == ["progress_images"]
    assert review.funds(pid) == []
    assert review.funds(pid) == []

    # The county no longer asks for progress images: the next funds event applies that.
    text = (ROOT / "rulesets" / "review-2022.1.yaml").read_text(encoding="utf-8")
    relaxed = text.replace('version: "2022.1"', 'version: "2022.2"', 1).replace(
        "        - progress_images          # 反映投资规模和形象进度的影像资料\n", "", 1
    )
    assert relaxed.count("progress_images") == text.count("progress_images") - 1
    rules.add_version(relaxed)
    [after] = recognitions(review.funds(pid))
    assert after["recognized"] is True and after["explanation"]["version"] == "2022.2"
    assert review.funds(pid) == []


def test_a_document_still_changes_recognition_after_funds(review: Review) -> None:
    data = lead(
        "TS02",
        planned_investment="50000000",
        documents=[{"type": t, "ref": t} for t in PROOFS[:-1]],
    )
    pid = f"TS02-{data['lead_id']}"
    review.send("lead", pid, data)
    assert review.funds(pid) == []
    doc = {"project_id": pid, "type": "land_use_certificate", "ref": "LUC-1"}
    [recognised] = recognitions(review.send("document", pid, doc))
    assert recognised["recognized"] is True and recognised["missing_proofs"] == []
    assert review.funds(pid) == []


def test_funds_records_with_vouchers_reuse_the_remembered_recognition(
    review: Review, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each funds record's voucher files one more `funds_voucher` row; the rules see each type
    once, the lead's own documents first, and this lead filed a voucher with it: nothing
    recognition reads has changed, so the rules are not run again (they were, on every funds
    record: review's CPU per funds record rose sevenfold)."""
    from services.review import cases, decide

    runs: list[str] = []
    real = decide.recognize

    def counted(project: Any, *args: Any, **kwargs: Any) -> Any:
        runs.append(str(project.lead_id))
        return real(project, *args, **kwargs)

    monkeypatch.setattr(cases.decide, "recognize", counted)
    data = lead(
        "TS05", planned_investment="50000000", documents=[{"type": t, "ref": t} for t in PROOFS]
    )
    pid = f"TS05-{data['lead_id']}"
    [first] = recognitions(review.send("lead", pid, data))
    assert first["recognized"] is True and len(runs) == 1
    assert "funds_voucher" in PROOFS
    for _ in range(6):
        assert review.funds(pid, voucher=True) == []
    assert len(runs) == 1
    with unit_of_work(review.engine) as session:
        assert store.documents_of(session, pid).count("funds_voucher") == 6


def test_a_stored_state_that_differs_is_announced_again(review: Review) -> None:
    """Whatever the process remembers, the case row decides what is new (a lost update, or
    another replica's write): a funds event announces recognition when they differ."""
    data = lead(
        "TS03", planned_investment="50000000", documents=[{"type": t, "ref": t} for t in PROOFS]
    )
    pid = f"TS03-{data['lead_id']}"
    [first] = recognitions(review.send("lead", pid, data))
    assert first["recognized"] is True
    with unit_of_work(review.engine) as session:
        case = session.get(store.Case, pid)
        assert case is not None
        case.recognition_state = None
        session.add(case)
    [again] = recognitions(review.funds(pid))
    assert again == first
    assert review.funds(pid) == []


def test_a_replayed_document_is_filed_on_its_own_date_whatever_other_units_reached(
    review: Review, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the business clock (the demo's replay) the business date is the latest day any
    unit's event reached; inboxes are read side by side, so it can be months ahead of a
    document another unit sent on time. The document counts as filed on its date."""
    from sqlmodel import select

    from services.review import cases

    monkeypatch.setattr(cases, "CLOCK", "business")
    data = lead("TS03", planned_investment="150000000", reported_on="2022-03-01")
    pid = f"TS03-{data['lead_id']}"
    review.send("lead", pid, data, unit="TS03")
    other = lead("TS04", reported_on="2022-09-01")  # another unit, further into the year
    review.send("lead", f"TS04-{other['lead_id']}", other, unit="TS04")
    doc = {
        "project_id": pid,
        "type": "feasibility_report",
        "ref": "FR-1",
        "issued_on": "2022-03-05",
    }
    review.send("document", pid, doc)
    # Without a date of its own: the latest day of its own unit's events (the lead's).
    undated = {"project_id": pid, "type": "aerial_view", "ref": "AV-1"}
    review.send("document", pid, undated, unit="TS03")
    with unit_of_work(review.engine) as session:
        assert store.business_date(session) is not None
        assert str(store.business_date(session)) == "2022-09-01"
        filed = {
            d.type: str(d.filed_on)
            for d in session.exec(
                select(store.FiledDocument).where(store.FiledDocument.project_id == pid)
            ).all()
        }
        assert filed == {"feasibility_report": "2022-03-05", "aerial_view": "2022-03-01"}
        assert "feasibility_report" in store.documents_of(
            session, pid, filed_by=dt.date(2022, 3, 15)
        )
