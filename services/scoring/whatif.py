"""What-if (假设测算): replay a year's stored facts through a proposed scoring ruleset and
compare each subject's points and rank, old vs new. Reads scoring's tables; changes nothing.

Both sides are replayed from the same facts — the recognised projects, their funds records
of the year and the rates on file — "old" through the rulesets in force, "new" through the
proposal, so the difference is the rule change and nothing else. Records still held (no
rate yet, project not recognised) count on neither side. The stored scoreboard is compared
with the old replay and any difference is reported (e.g. a version published since).

Speed: a year can hold hundreds of thousands of records. A rule only sees the facts its
conditions name, so the verdict (multiplier, matched rules) is computed once per distinct
combination of those facts and ruleset version, by `decide.score` itself, and reused; each
record then costs one Decimal multiplication, exactly as `decide.score` does it (amount ×
rate × multiplier, rounded to the fen once, half up). When a rule reads `funds.*` facts,
every record is scored by `decide.score` in full.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Engine, select
from sqlmodel import Session

from shared.directory import Directory
from shared.rules import Rules, RulesetRegistry
from shared.rules.facts import FactsError, get_path
from shared.rules.model import AnyRuleset
from shared.rules.resolve import ResolvedRuleset, leaves, resolve

from . import store
from .decide import RULESET, Scored, credit_roles, score
from .scoreboard import SubjectScore, ranked, subject_totals

FEN = Decimal("0.01")


# --- the facts on file -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectFacts:
    project_id: str
    lead: Mapping[str, Any]  # the Lead payload, JSON values
    sponsor_leader: str | None


@dataclass
class YearFacts:
    year: int
    projects: dict[str, ProjectFacts]  # recognised projects with a lead
    funds: list[tuple[str, int, str, dt.date]]  # (project_id, amount_fen, currency, arrived_on)
    rates: dict[tuple[dt.date, str], Decimal]
    unrecognised_records: int = 0


def load_facts(engine: Engine, year: int) -> YearFacts:
    """The year's funds records, the recognised projects they belong to, and the rates."""
    start, end = dt.date(year, 1, 1), dt.date(year + 1, 1, 1)
    p, f, r = store.Project, store.FundsRecord, store.Rate
    with engine.connect() as conn:
        projects = {
            pid: ProjectFacts(pid, json.loads(lead), sponsor)
            for pid, lead, sponsor in conn.execute(
                select(p.project_id, p.lead, p.sponsor_leader).where(
                    p.recognized.is_(True),  # type: ignore[union-attr]
                    p.lead.is_not(None),  # type: ignore[union-attr]
                )
            )
        }
        funds = []
        unrecognised = 0
        for pid, amount_fen, currency, arrived_on in conn.execute(
            select(f.project_id, f.amount_fen, f.currency, f.arrived_on)
            .where(f.arrived_on >= start, f.arrived_on < end)  # type: ignore[operator]
            .order_by(f.id)  # type: ignore[arg-type]
        ):
            if pid in projects:
                funds.append((pid, amount_fen, currency, arrived_on))
            else:
                unrecognised += 1
        rates = {
            (on, cur): Decimal(text)
            for on, cur, text in conn.execute(
                select(r.on, r.currency, r.cny_per_unit).where(
                    r.on >= start,  # type: ignore[operator]
                    r.on < end,  # type: ignore[operator]
                    r.cny_per_unit.is_not(None),  # type: ignore[union-attr]
                )
            )
        }
    return YearFacts(year, projects, funds, rates, unrecognised)


# --- replay ------------------------------------------------------------------------------------


@dataclass
class Totals:
    points: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    amount_rmb: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    projects: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    credited: int = 0
    held: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, subjects: list[str], project_id: str, amount: Decimal, points: Decimal) -> None:
        self.credited += 1
        for s in subjects:
            self.points[s] += points
            self.amount_rmb[s] += amount
            self.projects[s].add(project_id)

    def by_subject(self) -> dict[str, tuple[Decimal, Decimal, int]]:
        return {s: (self.points[s], self.amount_rmb[s], len(self.projects[s])) for s in self.points}


@dataclass(frozen=True)
class Verdict:
    multiplier: Decimal
    matched: tuple[str, ...]
    deciding_rule: str | None


class Replayer:
    """Scores records with one set of rules, remembering each verdict by the facts it read."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._version: dict[dt.date, AnyRuleset | None] = {}
        self._reads: dict[int, tuple[tuple[str, ...], bool]] = {}
        self._roles: dict[int, list[str]] = {}
        self._verdicts: dict[tuple[Any, ...], Verdict | str] = {}
        self._projects: dict[tuple[str, int], tuple[Verdict | str, list[str]]] = {}
        self.evaluations = 0

    def version(self, day: dt.date) -> AnyRuleset | None:
        if day not in self._version:
            try:
                self._version[day] = self.rules.in_force(RULESET, day)
            except LookupError:
                self._version[day] = None
        return self._version[day]

    def reads(self, ruleset: AnyRuleset) -> tuple[tuple[str, ...], bool]:
        """The fact paths the version's rules read, and whether any is a `funds.*` fact."""
        key = id(ruleset)
        if key not in self._reads:
            resolved: ResolvedRuleset = resolve(ruleset)
            paths = sorted({c.fact for rule in resolved.rules for c in leaves(rule.condition)})
            self._reads[key] = (tuple(paths), any(p.startswith("funds.") for p in paths))
        return self._reads[key]

    def roles(self, ruleset: AnyRuleset, day: dt.date) -> list[str]:
        if id(ruleset) not in self._roles:
            self._roles[id(ruleset)] = credit_roles(day, rules=self.rules)
        return self._roles[id(ruleset)]

    def verdict(
        self, project: ProjectFacts, facts: Mapping[str, Any], ruleset: AnyRuleset, funds: dict
    ) -> Verdict | str:
        paths, _ = self.reads(ruleset)
        key = (id(ruleset), *(_hashable(get_path(facts, p)) for p in paths))
        cached = self._verdicts.get(key)
        if cached is None:
            cached = self._decide(project, funds)
            self._verdicts[key] = cached
        return cached

    def for_project(
        self,
        project: ProjectFacts,
        facts: Mapping[str, Any],
        ruleset: AnyRuleset,
        day: dt.date,
        funds: dict,
    ) -> tuple[Verdict | str, list[str]]:
        """The verdict and the subjects credited for a project's records under one version."""
        key = (project.project_id, id(ruleset))
        known = self._projects.get(key)
        if known is None:
            roles = self.roles(ruleset, day)
            subjects = [
                str(v) for v in dict.fromkeys(get_path(facts, r) for r in roles) if v is not None
            ]
            known = self._projects[key] = (self.verdict(project, facts, ruleset, funds), subjects)
        return known

    def _decide(self, project: ProjectFacts, funds: dict) -> Verdict | str:
        result = self.full(project, funds)
        if isinstance(result, str):
            return result
        return Verdict(result.multiplier, tuple(result.matched), result.deciding_rule)

    def full(self, project: ProjectFacts, funds: dict) -> Scored | str:
        """decide.score on one record, for rules that read the record's own facts."""
        self.evaluations += 1
        try:
            result = score(
                project.lead,
                {k: v for k, v in funds.items() if k != "rate"},
                {funds["currency"]: funds["rate"]},
                sponsor_leader=project.sponsor_leader,
                rules=self.rules,
            )
        except (FactsError, LookupError) as exc:
            return f"cannot score: {exc}"
        return result if isinstance(result, Scored) else result.reason


def _hashable(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)


def _facts(project: ProjectFacts) -> dict[str, Any]:
    """The project's facts as decide.score builds them (documents become `filed.*`)."""
    facts = {k: v for k, v in project.lead.items() if k != "documents"}
    facts["filed"] = {str(d["type"]): True for d in project.lead.get("documents", [])}
    if project.sponsor_leader is not None:
        facts["sponsor_leader"] = project.sponsor_leader
    return facts


def replay(facts: YearFacts, replayers: list[Replayer]) -> list[Totals]:
    """Score every record of the year with each replayer's rules; one pass over the records."""
    totals = [Totals() for _ in replayers]
    project_facts: dict[str, dict[str, Any]] = {}
    for pid, amount_fen, currency, day in facts.funds:
        rate = Decimal(1) if currency == "CNY" else facts.rates.get((day, currency))
        if rate is None:
            for t in totals:
                t.held["exchange_rate"] += 1
            continue
        project = facts.projects[pid]
        pf = project_facts.get(pid)
        if pf is None:
            pf = project_facts[pid] = _facts(project)
        amount = Decimal(amount_fen) / 100
        exact = amount * rate
        funds: dict[str, Any] | None = None
        for replayer, total in zip(replayers, totals, strict=True):
            ruleset = replayer.version(day)
            if ruleset is None:
                total.held["no_ruleset"] += 1
                continue
            if funds is None:
                funds = {"amount": amount, "currency": currency, "arrived_on": day, "rate": rate}
            _, reads_funds = replayer.reads(ruleset)
            if reads_funds:
                scored = replayer.full(project, funds)
                if isinstance(scored, str):
                    total.held["other"] += 1
                    continue
                total.add(scored.credited_to, pid, scored.amount_rmb, scored.points)
                continue
            verdict, subjects = replayer.for_project(project, pf, ruleset, day, funds)
            if isinstance(verdict, str):
                total.held["exchange_rate" if "rate" in verdict else "other"] += 1
                continue
            total.add(
                subjects,
                pid,
                exact.quantize(FEN, ROUND_HALF_UP),
                (exact * verdict.multiplier).quantize(FEN, ROUND_HALF_UP),
            )
    return totals


# --- the proposal ------------------------------------------------------------------------------


@dataclass
class Proposal:
    """The two sides of a what-if: `base` (what is compared with) and `proposed` (base with
    the proposal in place); `changes` says what differs in maintainers' terms. Close it."""

    base: RulesetRegistry
    new: RulesetRegistry
    proposed: Rules
    changes: list[str]

    def close(self) -> None:
        self.base.close()
        self.new.close()


def proposal_rules(
    baseline: list[tuple[AnyRuleset, str]],
    proposal: list[tuple[AnyRuleset, str]],
    overrides: Mapping[str, Any] | None = None,
) -> Proposal:
    """`baseline` (the scoring versions live, or read from files) against the same with each
    proposed version taking the place of the version of its number and deciding the days it
    covers: days it does not cover keep their version, so a version from July changes only
    July onward. `overrides` (--set) apply on top. The proposal is validated by the caller,
    not gated on the rule tests: a policy change is expected to change what some expect."""
    base, new = RulesetRegistry(), RulesetRegistry()
    try:
        for ruleset, origin in baseline:
            base.load(ruleset, origin)
            new.load(ruleset, origin)
        changes: list[str] = []
        for ruleset, origin in proposal:
            new.remove(RULESET, ruleset.version)
            covered = [v for v in base.versions(RULESET) if v.effective.overlaps(ruleset.effective)]
            new.load(ruleset, origin, supersede=True)
            was = next((v for v in covered if v.version == ruleset.version), None) or (
                covered[0] if covered else None
            )
            changes.append(f"{ruleset.key} in force {ruleset.effective} (from {origin})")
            if was is not None:
                changes += [f"  {line}" for line in describe_change(was, ruleset, {})]
    except BaseException:
        base.close()
        new.close()
        raise
    proposed: Rules = new
    if overrides:
        proposed = new.with_parameters(RULESET, overrides, file="--set")
        changes.append("  " + ", ".join(f"{k} = {v}" for k, v in overrides.items()) + " (--set)")
    return Proposal(base, new, proposed, changes)


def describe_change(old: AnyRuleset, new: AnyRuleset, overrides: Mapping[str, Any]) -> list[str]:
    """What the proposal changes, in the terms a rule maintainer wrote it in."""
    lines = []
    if (old.id, old.version) != (new.id, new.version):
        lines.append(f"version {old.key} → {new.key}")
    for name in sorted(set(old.parameters) | set(new.parameters) | set(overrides)):
        before = old.parameters[name].value if name in old.parameters else None
        after = (
            overrides[name]
            if name in overrides
            else (new.parameters[name].value if name in new.parameters else None)
        )
        if before != after:
            lines.append(f"parameter {name}: {before} → {after}")
    old_rules = {r.id: r for r in resolve(old).rules}
    new_rules = {r.id: r for r in resolve(new).rules}
    for rid in sorted(set(old_rules) - set(new_rules)):
        lines.append(f"rule {rid} removed")
    for rid in sorted(set(new_rules) - set(old_rules)):
        lines.append(f"rule {rid} added (×{new_rules[rid].outcome.multiplier})")
    for rid in sorted(set(old_rules) & set(new_rules)):
        a, b = old_rules[rid], new_rules[rid]
        if a.outcome.multiplier != b.outcome.multiplier:
            lines.append(f"rule {rid}: ×{a.outcome.multiplier} → ×{b.outcome.multiplier}")
        if a.condition != b.condition:
            lines.append(f"rule {rid}: condition changed")
    return lines


# --- the what-if -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubjectChange:
    subject: str
    group: str
    name: str
    old: SubjectScore | None
    new: SubjectScore | None

    @property
    def changed(self) -> bool:
        def key(s: SubjectScore | None) -> tuple[Any, ...]:
            return (
                (s.points, s.amount_rmb, s.projects, s.rank)
                if s
                else (Decimal(0), Decimal(0), 0, None)
            )

        return key(self.old) != key(self.new)


@dataclass
class WhatIf:
    year: int
    proposal: str
    changes: list[SubjectChange]
    ruleset_changes: list[str]
    records: int  # funds records of the year on file
    replayed: int  # credited on the old side
    held: dict[str, int]
    evaluations: int  # rule evaluations needed (the rest reused a verdict)
    load_seconds: float
    replay_seconds: float
    stored_differs: list[str]  # subjects whose stored points differ from the old replay

    @property
    def changed(self) -> list[SubjectChange]:
        return [c for c in self.changes if c.changed]

    def to_json(self) -> dict[str, Any]:
        def side(s: SubjectScore | None) -> dict[str, Any] | None:
            if s is None:
                return None
            return {
                "points": str(s.points),
                "amount_rmb": str(s.amount_rmb),
                "projects": s.projects,
                "rank": s.rank,
            }

        return {
            "year": self.year,
            "proposal": self.proposal,
            "ruleset_changes": self.ruleset_changes,
            "records": self.records,
            "replayed": self.replayed,
            "held": self.held,
            "seconds": round(self.load_seconds + self.replay_seconds, 3),
            "stored_differs": self.stored_differs,
            "subjects": [
                {
                    "subject": c.subject,
                    "group": c.group,
                    "name": c.name,
                    "changed": c.changed,
                    "old": side(c.old),
                    "new": side(c.new),
                }
                for c in self.changes
            ],
        }


def run(
    engine: Engine,
    year: int,
    base: Rules,
    proposed: Rules,
    *,
    proposal: str,
    ruleset_changes: list[str] | None = None,
    directory: Directory | None = None,
    compare_stored: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> WhatIf:
    started = clock()
    facts = load_facts(engine, year)
    stored: dict[str, tuple[Decimal, Decimal, int]] = {}
    if compare_stored:
        with Session(engine) as session:
            stored = subject_totals(session, year)
    loaded = clock()
    old_replayer, new_replayer = Replayer(base), Replayer(proposed)
    old, new = replay(facts, [old_replayer, new_replayer])
    replayed = clock()

    old_rows = {r.subject: r for r in ranked(old.by_subject(), directory)}
    new_rows = {r.subject: r for r in ranked(new.by_subject(), directory)}
    order = list(new_rows) + [s for s in old_rows if s not in new_rows]
    changes = [
        SubjectChange(
            s,
            (new_rows.get(s) or old_rows[s]).group,
            (new_rows.get(s) or old_rows[s]).name,
            old_rows.get(s),
            new_rows.get(s),
        )
        for s in order
    ]
    old_points = {s: v[0] for s, v in old.by_subject().items()}
    differs = sorted(
        s
        for s in set(stored) | set(old_points)
        if (stored[s][0] if s in stored else Decimal(0)) != old_points.get(s, Decimal(0))
    )
    if not compare_stored:
        differs = []
    return WhatIf(
        year=year,
        proposal=proposal,
        changes=changes,
        ruleset_changes=ruleset_changes or [],
        records=len(facts.funds) + facts.unrecognised_records,
        replayed=old.credited,
        held=dict(old.held)
        | ({"recognition": facts.unrecognised_records} if facts.unrecognised_records else {}),
        evaluations=old_replayer.evaluations + new_replayer.evaluations,
        load_seconds=loaded - started,
        replay_seconds=replayed - loaded,
        stored_differs=differs,
    )


# --- rendering --------------------------------------------------------------------------------


def _pts(s: SubjectScore | None) -> str:
    return f"{s.points:,.2f}" if s else "-"


def _rank(s: SubjectScore | None) -> str:
    return str(s.rank) if s else "-"


def render_table(result: WhatIf, *, only_changed: bool = False) -> str:
    lines = [f"What-if {result.year}: {result.proposal} / 规则调整测算（不改变已记分数）"]
    for change in result.ruleset_changes or ["(no rule or parameter differs)"]:
        lines.append(f"  {change}")
    lines.append("")
    lines.append(
        f"  {'subject':<9}{'group':<11}{'old points':>20}{'old rank':>9}{'new points':>20}"
        f"{'new rank':>9}{'change':>20}  name"
    )
    rows = result.changed if only_changed else result.changes
    for c in rows:
        delta = (c.new.points if c.new else Decimal(0)) - (c.old.points if c.old else Decimal(0))
        mark = "*" if c.changed else " "
        lines.append(
            f"{mark} {c.subject:<9}{c.group:<11}{_pts(c.old):>20}{_rank(c.old):>9}{_pts(c.new):>20}"
            f"{_rank(c.new):>9}{delta:>+20,.2f}  {c.name}"
        )
    seconds = result.load_seconds + result.replay_seconds
    rate = result.records / seconds if seconds else 0.0
    held = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(result.held.items()))
    lines.append("")
    lines.append(
        f"{len(result.changed)} of {len(result.changes)} subjects change (*). {result.records} funds records "
        f"of {result.year}: {result.replayed} scored" + (f", held: {held}" if held else "") + "."
    )
    lines.append(
        f"Replayed in {seconds:.2f}s (load {result.load_seconds:.2f}s, score {result.replay_seconds:.2f}s; "
        f"{rate:,.0f} records/s; {result.evaluations} rule evaluations). Nothing stored was changed."
    )
    if result.stored_differs:
        lines.append(
            f"Note: the stored scores of {len(result.stored_differs)} subject(s) differ from a replay with the "
            f"rules in force ({', '.join(result.stored_differs[:8])}): a version published since, or "
            "records credited since the replay read the tables."
        )
    return "\n".join(lines)


def render_csv(result: WhatIf) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["subject", "group", "name", "changed", "old_points", "old_rank", "new_points", "new_rank"]
    )
    for c in result.changes:
        w.writerow(
            [
                c.subject,
                c.group,
                c.name,
                int(c.changed),
                c.old.points if c.old else "",
                c.old.rank if c.old else "",
                c.new.points if c.new else "",
                c.new.rank if c.new else "",
            ]
        )
    return buf.getvalue()


def render(result: WhatIf, fmt: str = "table", *, only_changed: bool = False) -> str:
    if fmt == "json":
        return json.dumps(result.to_json(), ensure_ascii=False, indent=2)
    if fmt == "csv":
        return render_csv(result)
    return render_table(result, only_changed=only_changed)
