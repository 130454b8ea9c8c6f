"""The consumer's shortcuts keep its results: what a trigger sees of a project, runs of messages
in one transaction, and emails built with the cached header parsing."""

from __future__ import annotations

import dataclasses
import email.policy
import json
import re
from decimal import Decimal

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from services.notify import facts, store
from services.notify.channels import EMAIL_POLICY, Outgoing, build_email
from services.notify.handlers import consume_run
from services.notify.triggers import ALERTING_SUBJECTS, EVENT_TRIGGERS, event_alerts
from shared.contract import (
    Change,
    ClaimResolved,
    Credited,
    Decided,
    DuplicateClaim,
    Explanation,
    MaterialsStatus,
    RecordCorrected,
    RecordWithdrawn,
    Screened,
)
from tests.notify.support import NOW, RENDERER, envelope, feed, lead_event, notify_engine, titles

pytestmark = pytest.mark.timeout(60)
EXPL = Explanation(
    ruleset_id="review", version="2022.1", matched=[], parameters={}, deciding_rule=None
)
PID = "TS01-P1"
DATE = "Tue, 01 Mar 2022 08:00:00 -0000"


def events() -> dict[str, dict]:
    """One event of each subject that can alert, about PID."""
    return {
        "project.lead": lead_event("TS01", "P1", landing_area="DEVZONE"),
        "project.duplicate": json.loads(
            DuplicateClaim(
                event_id="duplicate:TS02-X",
                project_id=PID,
                duplicate_of="TS02-X",
                units=["TS02", "TS01"],
                reason="same investor",
                received_at=NOW,
            ).model_dump_json()
        ),
        "review.screened": json.loads(
            Screened(
                project_id=PID,
                outcome="terminated",
                track=None,
                reasons=["industry_out_of_scope"],
                explanation=EXPL,
            ).model_dump_json()
        ),
        "review.materials": json.loads(
            MaterialsStatus(
                project_id=PID,
                complete=False,
                missing_materials=["aerial_view"],
                deadline="2022-02-18",
                explanation=EXPL,
            ).model_dump_json()
        ),
        "review.decided": json.loads(
            Decided(
                project_id=PID,
                meeting_id="M1",
                decision="approved",
                minutes_ref="纪要〔2022〕2号",
                sponsor_leader="L03",
                responsible_leader="L01",
                hq_commander="L03",
                hq_members=["TS01", "DRC"],
            ).model_dump_json()
        ),
        "score.credited": json.loads(
            Credited(
                project_id=PID,
                funds_id="F1",
                year=2022,
                quarter=1,
                amount_rmb=Decimal("3000000"),
                multiplier=Decimal("1.5"),
                points=Decimal("4500000"),
                matched=[],
                deciding_rule=None,
                credited_to=["TS01", "L03"],
                explanation=EXPL,
            ).model_dump_json()
        ),
        "project.correction": json.loads(
            RecordCorrected(
                event_id="correction:TS01:k1",
                project_id=PID,
                unit="TS01",
                idempotency_key="k1",
                received_at=NOW,
                data={
                    "correction_id": "C1",
                    "target": {"kind": "funds", "project_id": PID, "funds_id": "F1"},
                    "changes": {"amount": "2000000"},
                    "reason": "typo",
                },
                version=2,
                owner="TS01",
                before={"amount": "3000000"},
                after={"amount": "2000000"},
                changes=[Change(field="amount", old="3000000", new="2000000")],
            ).model_dump_json()
        ),
        "project.withdrawal": json.loads(
            RecordWithdrawn(
                event_id="withdrawal:TS01:k2",
                project_id=PID,
                unit="TS01",
                idempotency_key="k2",
                received_at=NOW,
                data={
                    "target": {"kind": "funds", "project_id": PID, "funds_id": "F1"},
                    "reason": "twice",
                },
                version=3,
                owner="TS01",
                before={"amount": "2000000"},
            ).model_dump_json()
        ),
        "project.claim": json.loads(
            ClaimResolved(
                event_id="claim:CENTER:k3",
                project_id=PID,
                unit="CENTER",
                idempotency_key="k3",
                received_at=NOW,
                data={
                    "project_id": PID,
                    "resolution": "distinct",
                    "reason": "two projects",
                },
                duplicate_of="TS02-X",
                units=["TS01", "TS02"],
                released=PID,
            ).model_dump_json()
        ),
    }


def test_every_trigger_says_the_same_from_the_project_row_as_from_all_its_facts(
    tmp_path,
) -> None:
    engine = notify_engine(f"sqlite:///{tmp_path / 'n.db'}")
    samples = events()
    assert set(samples) == ALERTING_SUBJECTS == set(EVENT_TRIGGERS)
    # All applied first: the decision gives the project a sponsor, the funds give `view` facts
    # that `card` leaves out.
    for subject, event in samples.items():
        feed(engine, subject, event)
    feed(
        engine,
        "project.funds",
        envelope(
            "funds",
            "TS01",
            {"project_id": PID, "funds_id": "F1", "amount": "3000000", "currency": "CNY"}
            | {"arrived_on": "2022-02-01", "form": "cash", "voucher": {"kind": "bank"}},
            project_id=PID,
        ),
    )
    with Session(engine) as session:
        card, view = facts.project_card(session, PID), facts.project_view(session, PID)
    assert card is not None and view is not None and view.funds and card.sponsor_leader == "L03"
    for subject, event in samples.items():
        by_card = event_alerts(subject, event, card, titles)
        assert by_card and by_card == event_alerts(subject, event, view, titles), subject
    assert event_alerts("project.funds", {"project_id": PID}, card, titles) == []


def test_a_run_of_messages_is_one_transaction_and_counts_like_one_by_one(tmp_path) -> None:
    engine = notify_engine(f"sqlite:///{tmp_path / 'n.db'}")
    lead = ("project.lead", lead_event("TS01", "P1", landing_area="DEVZONE"), "k-lead")
    early = ("review.screened", events()["review.screened"] | {"project_id": "TS09-X"}, "k-x")
    with pytest.raises(facts.ProjectNotYetKnown):  # one message the run cannot take yet ...
        consume_run(engine, [lead, early], RENDERER, titles, NOW)
    with Session(engine) as session:  # ... and none of it is stored
        assert session.exec(select(store.Processed)).all() == []
        assert session.exec(select(store.Project)).all() == []
    screened = ("review.screened", events()["review.screened"], "k-screened")
    run = [lead, screened, lead]  # the same message twice, as after a redelivery
    one_by_one = notify_engine(f"sqlite:///{tmp_path / 'o.db'}")
    alone = sum(consume_run(one_by_one, [m], RENDERER, titles, NOW) for m in run)
    assert consume_run(engine, run, RENDERER, titles, NOW) == alone == 4  # 2 causes × 2 units
    assert consume_run(engine, [lead, screened], RENDERER, titles, NOW) == 0

    def outbox(e: Engine) -> list[tuple[str, str, str, str]]:
        N = store.Notification
        with Session(e) as session:
            found = session.exec(select(N.cause, N.recipient, N.channel, N.body)).all()
        return sorted((c, r, ch, b) for c, r, ch, b in found)

    assert outbox(engine) == outbox(one_by_one)
    assert {c for c, _, _, _ in outbox(engine)} == {f"lead_assigned:{PID}", f"terminated:{PID}"}


def test_emails_are_byte_for_byte_those_of_the_default_policy(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("services.notify.channels.formatdate", lambda localtime: DATE)
    subject, body = RENDERER.message(
        "credited", "zh", {"project_id": PID, "title": "年产5万吨新材料项目"}, "TS01"
    )
    note = Outgoing(
        id=1,
        cause=f"credited:{PID}:F1",
        kind="credited",
        project_id=PID,
        recipient="TS01",
        channel="email",
        language="zh",
        subject=subject,
        body=body,
        html=None,
        image=None,
        data={},
        target={"to": ["ts01@county.example", "center@county.example"]},
    )
    boundary = re.compile(rb"={15}\d+==")  # random per message

    def html_of(n: Outgoing) -> str:
        return RENDERER.email_html(n.subject, n.body, n.language, n.cause)

    for i in range(3):  # the second and third build reuse the headers the first one parsed
        variant = dataclasses.replace(
            note, subject=f"{subject} {'长' * 30 * i}", image=b"\x89PNG" * 40 if i else None
        )
        built = build_email(variant, "investflow@localhost", html_of)
        assert built.policy is EMAIL_POLICY
        for policy in (None, email.policy.default.clone(utf8=True)):  # as smtplib sends it
            got = built.as_bytes(policy=policy)
            reference = build_email(
                variant, "investflow@localhost", html_of, policy=email.policy.default
            )
            want = reference.as_bytes(policy=policy)
            assert boundary.sub(b"B", got) == boundary.sub(b"B", want)
