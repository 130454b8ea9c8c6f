"""`investflow contacts|notifications|report`: notify's tools for the Center's operators.

They work on notify's own database: `--database-url`, else NOTIFY_DATABASE_URL / DATABASE_URL,
else the SQLite file in INVESTFLOW_DATA_DIR (as `investflow up --data DIR` uses).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from shared.settings import REPO_ROOT, Settings


def _database_url(args: argparse.Namespace) -> str:
    return args.database_url or Settings.from_env().database_url_for("notify")


def _engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from services.notify import store
    from shared.db import create_tables, make_engine

    engine = make_engine(_database_url(args))
    create_tables(engine, store.TABLES)
    return engine


def _directory():  # type: ignore[no-untyped-def]
    from shared.directory import load_directory

    return load_directory(Settings.from_env().units_file)


def _contacts_load(args: argparse.Namespace) -> int:
    from services.notify.contacts import ContactsError, read_contacts, store_contacts
    from shared.db import unit_of_work

    directory = _directory()
    try:
        entries = read_contacts(Path(args.file), directory)
    except ContactsError as exc:
        print(f"investflow contacts load: {exc}", file=sys.stderr)
        return 1
    engine = _engine(args)
    with unit_of_work(engine) as session:
        n = store_contacts(session, entries, directory)
    channels = sum(
        1 for e in entries for ch in ("email", "webhook", "dingtalk", "wecom") if getattr(e, ch)
    )
    print(f"loaded {n} contacts ({channels} channels) from {args.file}")
    return 0


def _notifications_list(args: argparse.Namespace) -> int:
    from sqlmodel import Session, select

    from services.notify import store

    N = store.Notification
    query = select(N).order_by(N.id)  # type: ignore[arg-type]
    if args.status:
        query = query.where(N.status == args.status)
    if args.cause:
        query = query.where(N.cause.startswith(args.cause))  # type: ignore[attr-defined]
    with Session(_engine(args)) as session:
        rows = list(session.exec(query.limit(args.limit)).all())
    print(f"{'id':>6}  {'status':<8}{'tries':>5}  {'recipient':<10}{'channel':<9}cause / error")
    for row in rows:
        print(
            f"{row.id:>6}  {row.status:<8}{row.attempts:>5}  {row.recipient:<10}{row.channel:<9}{row.cause}"
        )
        if row.last_error and row.status != "sent":
            print(f"{'':>30}{row.last_error[:160]}")
    print(f"{len(rows)} notification(s)")
    return 0


def _notifications_retry(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from services.notify import store
    from services.notify.contacts import recipients
    from services.notify.dispatch import utcnow
    from shared.db import unit_of_work

    engine = _engine(args)
    with unit_of_work(engine) as session:
        row = session.get(store.Notification, args.id)
        if row is None:
            print(f"investflow notifications retry: no notification {args.id}", file=sys.stderr)
            return 1
        if row.status in ("sent", "sending"):
            print(
                f"investflow notifications retry: {args.id} is {row.status}; only pending or failed ones are retried",
                file=sys.stderr,
            )
            return 1
        if row.channel == "none":  # no contact then: take the address it has now, if any
            now_known = recipients(session, [row.recipient])[row.recipient].addresses
            if not now_known:
                print(
                    f"investflow notifications retry: {row.recipient} still has no contact; "
                    "add it to deploy/contacts.yaml and run `investflow contacts load`",
                    file=sys.stderr,
                )
                return 1
            row.channel, target = next(iter(now_known.items()))
            row.target = json.dumps(target, ensure_ascii=False)
        row.status, row.attempts, row.next_attempt_at = "pending", 0, utcnow()
        row.outcome_published_at = None
        session.add(row)
        what = f"{row.cause} → {row.recipient} ({row.channel})"
    if not args.now:
        print(f"queued {args.id}: {what}; the running notify service delivers it within seconds")
        return 0
    from services.notify.deliver import deliver_now

    ok = asyncio.run(deliver_now(engine, args.id))
    print(f"{'delivered' if ok else 'failed again'} {args.id}: {what}")
    return 0 if ok else 1


def _report_weekly(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from services.notify import facts, replay
    from services.notify.params import load_params
    from services.notify.render import Renderer
    from services.notify.report import standalone_html
    from services.notify.scheduler import Scheduler

    try:
        on = dt.date.fromisoformat(args.on)
    except ValueError:
        print(
            f"investflow report weekly: --on {args.on!r} is not a date (YYYY-MM-DD)",
            file=sys.stderr,
        )
        return 2
    directory = _directory()
    if args.leader and not directory.is_leader(args.leader):
        print(f"investflow report weekly: {args.leader} is not a county leader", file=sys.stderr)
        return 2
    if args.samples:
        samples = Path(args.samples)
        if not samples.is_file():
            print(
                f"investflow report weekly: --samples {args.samples!r} is not a file "
                "(a JSON Lines file such as samples/year-2022.jsonl) / 不是文件",
                file=sys.stderr,
            )
            return 2
        try:
            engine = replay.facts_from_file(samples, directory)
        except (UnicodeDecodeError, ValueError) as exc:
            print(f"investflow report weekly: {exc}", file=sys.stderr)
            return 2
    else:
        engine = _engine(args)
    renderer = Renderer(directory)
    settings = Settings.from_env()
    sched = Scheduler(
        engine, renderer, directory, load_params(), settings.rulesets_dir, lambda: None
    )
    with Session(engine) as session:
        snapshot = facts.load_snapshot(session)
    report = sched.report(snapshot, on, args.leader)
    html = standalone_html(renderer, report, args.lang)
    Path(args.out).write_text(html, encoding="utf-8")
    print(
        f"wrote {args.out}: {report['projects']} projects as of {report['as_of']}, "
        f"{len(report['overdue'])} overdue visits, funds in place {report['funds_year_rmb']} yuan"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    db_help = "notify's database (default: $NOTIFY_DATABASE_URL, $DATABASE_URL, or data/notify.db)"

    contacts = sub.add_parser("contacts", help="who notify tells, and how (deploy/contacts.yaml)")
    csub = contacts.add_subparsers(dest="contacts_command", required=True)
    load = csub.add_parser("load", help="check the contacts file and replace the stored contacts")
    load.add_argument("--file", default=str(REPO_ROOT / "deploy" / "contacts.yaml"))
    load.add_argument("--database-url", default=None, help=db_help)
    load.set_defaults(func=_contacts_load)

    notes = sub.add_parser("notifications", help="the notifications outbox")
    nsub = notes.add_subparsers(dest="notifications_command", required=True)
    lst = nsub.add_parser("list", help="list notifications, oldest first")
    lst.add_argument("--status", choices=("pending", "sending", "sent", "failed"), default=None)
    lst.add_argument(
        "--cause", default=None, help="only causes starting with this, e.g. visit_overdue"
    )
    lst.add_argument("--limit", type=int, default=200)
    lst.add_argument("--database-url", default=None, help=db_help)
    lst.set_defaults(func=_notifications_list)
    retry = nsub.add_parser("retry", help="send a failed (or pending) notification again")
    retry.add_argument("id", type=int)
    retry.add_argument(
        "--now", action="store_true", help="deliver from this process instead of the service"
    )
    retry.add_argument("--database-url", default=None, help=db_help)
    retry.set_defaults(func=_notifications_retry)

    report = sub.add_parser("report", help="progress reports (挂图作战，定期公布)")
    rsub = report.add_subparsers(dest="report_command", required=True)
    weekly = rsub.add_parser("weekly", help="render the weekly report of a day to an HTML file")
    weekly.add_argument(
        "--on", required=True, help="the report's day (YYYY-MM-DD): facts before it count"
    )
    weekly.add_argument("--out", default="report.html")
    weekly.add_argument(
        "--leader", default=None, help="a sponsor leader's report (e.g. L03); default county-wide"
    )
    weekly.add_argument("--lang", choices=("zh", "en"), default="zh")
    weekly.add_argument(
        "--samples",
        default=None,
        help="build the facts from a JSON Lines file instead of the database",
    )
    weekly.add_argument("--database-url", default=None, help=db_help)
    weekly.set_defaults(func=_report_weekly)
