"""Delivering one notification from outside the service (`investflow notifications retry --now`)."""

from __future__ import annotations

from sqlalchemy import Engine

from shared.directory import load_directory
from shared.settings import Settings

from .channels import default_channels
from .dispatch import Dispatcher, RetryPolicy
from .render import Renderer


async def deliver_now(engine: Engine, note_id: int) -> bool:
    """Claim and send it here; the running service announces the outcome (notify.sent/failed)."""
    renderer = Renderer(load_directory(Settings.from_env().units_file))
    channels = default_channels(
        lambda note: (
            note.html or renderer.email_html(note.subject, note.body, note.language, note.cause)
        )
    )
    return await Dispatcher(engine, channels, policy=RetryPolicy.from_env()).deliver(note_id)
