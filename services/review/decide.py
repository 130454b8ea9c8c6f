"""Review decisions: screening (初步筛选), committee materials (评审会材料) and recognition
for the assessment (认定). Pure: facts in, decision and explanation out; no NATS, no database.

Every decision reads the review ruleset version in force on the project's own date (its
`reported_on`, or `on=` when given), never today's date. What is decided lives in the ruleset:
- screening: a matched `terminate` rule terminates (告知终止洽谈), each one a reason; else
  the first matched `route` rule gives the track, or the ruleset's `default_track`;
- materials: a matched `require_materials` rule means a listed document is missing; the
  deadline is the meeting day minus the rule's `due_days_before_meeting`;
- recognition: blocked by every matched `not_recognised` rule and, because a terminated
  project is never recognised, by every matched `terminate` rule.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.contract import (
    Explanation,
    Lead,
    MaterialsStatus,
    Outcome,
    Recognition,
    Screened,
    Track,
)
from shared.rules import (
    Evaluation,
    Rules,
    default_registry,
    document_types,
    explanation,
    project_dict,
    project_facts,
)
from shared.rules.decision import decision_input
from shared.rules.facts import FactsError

RULESET = "review"

Project = Lead | Mapping[str, Any]


@dataclass(frozen=True)
class Screening:
    outcome: Outcome
    track: Track | None  # None when terminated
    reasons: list[str]  # the terminate rules that matched, in ruleset order
    explanation: Explanation

    def to_event(self, project_id: str) -> Screened:
        return Screened(
            project_id=project_id,
            outcome=self.outcome,
            track=self.track,
            reasons=self.reasons,
            explanation=self.explanation,
        )


@dataclass(frozen=True)
class Materials:
    complete: bool
    missing_materials: list[str]
    deadline: dt.date | None  # None when no materials are required, or no meeting is set
    explanation: Explanation

    def to_event(self, project_id: str) -> MaterialsStatus:
        return MaterialsStatus(
            project_id=project_id,
            complete=self.complete,
            missing_materials=self.missing_materials,
            deadline=self.deadline,
            explanation=self.explanation,
        )


@dataclass(frozen=True)
class RecognitionResult:
    recognized: bool
    recognition_blockers: list[str]
    missing_proofs: list[str]
    explanation: Explanation

    def to_event(self, project_id: str) -> Recognition:
        return Recognition(
            project_id=project_id,
            recognized=self.recognized,
            recognition_blockers=self.recognition_blockers,
            missing_proofs=self.missing_proofs,
            explanation=self.explanation,
        )


@dataclass(frozen=True)
class _Evaluated:
    evaluation: Evaluation
    digest: str
    meeting_on: dt.date | None
    record: dict[str, Any]  # the input as the decision record keeps it (digest's source)

    def explain(self, considered: list[str], deciding: str | None) -> Explanation:
        return explanation(
            self.evaluation, considered, deciding, self.digest, record_input=self.record
        )


def _evaluate(
    project: Project,
    documents: Iterable[Any],
    meeting_on: dt.date | None,
    on: dt.date | None,
    rules: Rules | None,
    sponsor_leader: str | None,
) -> _Evaluated:
    data = project_dict(project)
    day = on or data.get("reported_on")
    if day is None:
        raise FactsError(
            [
                (
                    "project.reported_on",
                    "needed to pick the ruleset version (or pass on=) / 缺少报送日期",
                )
            ]
        )
    extra = list(documents)
    facts = project_facts(data, document_types(data, extra), sponsor_leader)
    if meeting_on is not None:
        facts["meeting_on"] = meeting_on
    evaluation = (rules or default_registry()).evaluate(RULESET, facts, day)
    record, digest = decision_input(
        {
            "project": data,
            "documents": sorted(facts["filed"]),
            "meeting_on": meeting_on,
            "sponsor_leader": sponsor_leader,
            "on": day,
        }
    )
    return _Evaluated(evaluation, digest, meeting_on, record)


def _screening(e: _Evaluated) -> Screening:
    ev = e.evaluation
    considered = ev.rules_with("terminate", "route")
    reasons = ev.matched_with("terminate")
    if reasons:
        return Screening(Outcome.terminated, None, reasons, e.explain(considered, reasons[0]))
    routes = ev.matched_with("route")
    default = ev.resolved.ruleset.default_track  # type: ignore[union-attr]
    track = ev.outcome(routes[0]).track if routes else default
    deciding = routes[0] if routes else None
    return Screening(Outcome.accepted, Track(track), [], e.explain(considered, deciding))


def _materials(e: _Evaluated) -> Materials:
    ev = e.evaluation
    considered = ev.rules_with("require_materials")
    matched = ev.matched_with("require_materials")
    missing: dict[str, None] = {}
    for rule_id in matched:
        need = ev.outcome(rule_id).documents
        assert need is not None  # require_materials always lists documents
        missing.update(dict.fromkeys(need.missing(ev.facts)))
    applying = [r for r in considered if r in ev.applicable]
    deadline = None
    if e.meeting_on is not None and applying:
        lead_days = max(ev.outcome(r).due_days or 0 for r in applying)
        deadline = e.meeting_on - dt.timedelta(days=lead_days)
    return Materials(
        complete=not matched,
        missing_materials=list(missing),
        deadline=deadline,
        explanation=e.explain(considered, matched[0] if matched else None),
    )


def _recognition(e: _Evaluated) -> RecognitionResult:
    ev = e.evaluation
    considered = ev.rules_with("terminate", "not_recognised")
    blockers = ev.matched_with("terminate", "not_recognised")
    missing: dict[str, None] = {}
    for rule_id in blockers:
        need = ev.outcome(rule_id).documents
        if need is not None:
            missing.update(dict.fromkeys(need.missing(ev.facts)))
    return RecognitionResult(
        recognized=not blockers,
        recognition_blockers=blockers,
        missing_proofs=list(missing),
        explanation=e.explain(considered, blockers[0] if blockers else None),
    )


def screen(
    project: Project,
    on: dt.date | None = None,
    *,
    rules: Rules | None = None,
    sponsor_leader: str | None = None,
) -> Screening:
    """初步筛选: accepted (with its track) or terminated (with the rules that say why)."""
    return _screening(_evaluate(project, (), None, on, rules, sponsor_leader))


def materials(
    project: Project,
    documents: Iterable[Any] = (),
    meeting_on: dt.date | None = None,
    *,
    on: dt.date | None = None,
    rules: Rules | None = None,
) -> Materials:
    """评审会材料: whether the committee materials are filed, and by when they must be.

    `documents` are those filed after the lead (DocumentRef/Document events, mappings with a
    `type`, or bare type names); the lead's own `documents` always count too.
    """
    return _materials(_evaluate(project, documents, meeting_on, on, rules, None))


def recognize(
    project: Project,
    documents: Iterable[Any] = (),
    *,
    on: dt.date | None = None,
    rules: Rules | None = None,
    sponsor_leader: str | None = None,
) -> RecognitionResult:
    """认定: whether the project counts for the assessment, and what blocks it."""
    return _recognition(_evaluate(project, documents, None, on, rules, sponsor_leader))


@dataclass(frozen=True)
class Review:
    """All three review decisions from one evaluation, and the evaluation for explaining."""

    screening: Screening
    materials: Materials
    recognition: RecognitionResult
    evaluation: Evaluation


def review(
    project: Project,
    documents: Iterable[Any] = (),
    meeting_on: dt.date | None = None,
    *,
    on: dt.date | None = None,
    rules: Rules | None = None,
    sponsor_leader: str | None = None,
) -> Review:
    """Screening, materials and recognition at once (what `investflow rules explain` shows)."""
    e = _evaluate(project, documents, meeting_on, on, rules, sponsor_leader)
    return Review(_screening(e), _materials(e), _recognition(e), e.evaluation)


def case_result(case: Any, rules: Rules) -> dict[str, Any]:
    """Every outcome a review rule test may expect, from one evaluation (see ruletest.py)."""
    # The approval's sponsor leader (集体决策批准时指定): the case file's `sponsor_leader`
    # when its schema has one, else a `sponsor_leader` key beside the project's fields.
    project = dict(case.project)
    sponsor = getattr(case, "sponsor_leader", None) or project.pop("sponsor_leader", None)
    r = review(
        project, case.documents, case.meeting_on, on=case.on, rules=rules, sponsor_leader=sponsor
    )
    screening, mats, recognition = r.screening, r.materials, r.recognition
    return {
        "outcome": screening.outcome.value,
        "reasons": screening.reasons,
        "track": screening.track.value if screening.track else None,
        "complete": mats.complete,
        "missing_materials": mats.missing_materials,
        "deadline": mats.deadline,
        "recognized": recognition.recognized,
        "recognition_blockers": recognition.recognition_blockers,
        "missing_proofs": recognition.missing_proofs,
        "matched": list(r.evaluation.matched),
        "_version": r.evaluation.resolved.key,
        "_rules": [rule.id for rule in r.evaluation.resolved.rules],
    }
