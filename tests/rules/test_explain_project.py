"""`rules explain --project`'s handling of one decision record (issue 14.8), on records made by
the real decision functions under the shipped rulesets: a committee's rejection laid over the
rules' result still replays as the same record; a record whose input was altered, or that has
no input, is said to be so (never a traceback, never a silent ✓). The live path — records read
from the streams of a running system — is tests/rules/test_lifecycle_live.py."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest

from investflow.explain_project import Record, Replayer, explain_record, local_versions
from investflow.rules_cli import _print_rules
from services.review import decide
from shared.rules import RulesetRegistry
from shared.settings import REPO_ROOT
from tests.helpers import lead

RULESETS = REPO_ROOT / "rulesets"


@pytest.fixture(scope="module")
def rules() -> Any:
    with RulesetRegistry.from_paths([RULESETS]) as registry:
        yield registry


def recognition_event(rules: RulesetRegistry, committee_rejected: bool = False) -> dict[str, Any]:
    data = lead("TS01")
    rec = decide.recognize(data, ["progress_images"], rules=rules)
    event = rec.to_event(f"TS01-{data['lead_id']}").model_dump(mode="json")
    if committee_rejected:  # as review/cases.py lays the committee's decision over the rules'
        event["recognized"] = False
        event["recognition_blockers"] = ["committee_rejected", *event["recognition_blockers"]]
        event["explanation"]["deciding_rule"] = "committee_rejected"
        event["committee_rejected"] = True
    return event


def explain(event: dict[str, Any]) -> tuple[bool, str]:
    out = io.StringIO()
    replayer = Replayer()
    try:
        record = Record("REVIEW", 7, "review.recognition", event)
        ok = explain_record(record, local_versions(RULESETS), replayer, _print_rules, out)
    finally:
        replayer.close()
    return ok, out.getvalue()


def test_a_committee_rejection_replays_as_the_same_record(rules: RulesetRegistry) -> None:
    ok, out = explain(recognition_event(rules, committee_rejected=True))
    assert ok, out
    assert "集体决策未通过 rejected by the committee" in out
    assert "决定规则 Deciding rule: committee_rejected" in out
    assert "✓ 同一决定 the same decision and record" in out
    assert "progress_images" in out.split("已提交文件 documents filed: ")[1].split("\n")[0]


def test_an_altered_input_or_none_at_all_is_said_to_be_so(rules: RulesetRegistry) -> None:
    event = recognition_event(rules)
    altered = copy.deepcopy(event)
    altered["explanation"]["input"]["project"]["planned_investment"] = "900000000"
    ok, out = explain(altered)
    assert not ok
    assert "✗ 与输入不符 does NOT match the input" in out
    assert "✗ differs from the record" in out  # ≥ 100 million: major, so committee rules match

    bare = copy.deepcopy(event)
    del bare["explanation"]["input"]
    ok, out = explain(bare)
    assert not ok and "predates stored inputs" in out
