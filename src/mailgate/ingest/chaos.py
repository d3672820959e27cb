"""Chaos: answer a chosen SMTP error at a chosen stage with a probability (issue 10).

A testing tool, as Mailpit's ``--enable-chaos``: an application's retry and error paths
are exercised against a capture server that refuses, now and then, on purpose. Four
stages: ``auth`` (AUTH), ``mail`` (MAIL FROM), ``rcpt`` (each RCPT TO) and ``data``
(after the client's end of DATA or BDAT LAST: the message is then not kept). Each has a
:class:`Trigger`: a reply code (400–599, RFC 5321 §4.2.1: a 4yz or 5yz reply) and a
probability in percent (0 = off; fractions allowed).

The triggers are a pure value (:class:`Triggers`: given the random draw, whether a
command fails); :class:`Chaos` holds the ones in force, changed at run time by
``PUT /api/v1/chaos`` and Mailpit's ``PUT /mailpit/api/v1/chaos`` (one instance, built
by the composition root and shared with the capture server). Mailpit has no ``data``
stage: its route sets the other three and leaves ``data`` as it is.

The SMTP engine asks only :attr:`Chaos.armed` per command while every probability is 0,
so chaos switched off costs one attribute read.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from mailgate.errors import InvalidInput

if TYPE_CHECKING:
    from mailgate.settings import ChaosSettings

__all__ = ["Chaos", "Stage", "Trigger", "Triggers", "chaos_reply", "configured", "trigger"]


class Stage(StrEnum):
    AUTH = "auth"  #: the AUTH command (RFC 4954)
    MAIL = "mail"  #: MAIL FROM
    RCPT = "rcpt"  #: each RCPT TO
    DATA = "data"  #: the end of DATA or BDAT LAST: the message is not kept


#: what a chaos reply says was refused, by stage
_WHAT = {
    Stage.AUTH: "authentication",
    Stage.MAIL: "sender",
    Stage.RCPT: "recipient",
    Stage.DATA: "message",
}


@dataclass(frozen=True, slots=True)
class Trigger:
    code: int = 451  #: the reply code; Mailpit's default: 451 (local error in processing)
    probability: float = 0.0  #: percent, 0–100; 0: never

    def fires(self, draw: float) -> bool:
        """Whether a command fails, for a uniform ``draw`` in [0, 1)."""
        return draw * 100 < self.probability


@dataclass(frozen=True, slots=True)
class Triggers:
    auth: Trigger = Trigger()
    mail: Trigger = Trigger()
    rcpt: Trigger = Trigger()
    data: Trigger = Trigger()

    def at(self, stage: Stage) -> Trigger:
        trigger: Trigger = getattr(self, stage.value)
        return trigger

    @property
    def armed(self) -> bool:
        """Whether any stage can fire."""
        return any(self.at(stage).probability > 0 for stage in Stage)

    def reply(self, stage: Stage, draw: float) -> int | None:
        """The error code to answer at ``stage`` for this ``draw``, or None to go on."""
        trigger = self.at(stage)
        return trigger.code if trigger.fires(draw) else None

    def replaced(self, given: Mapping[Stage, Trigger], stages: Iterable[Stage]) -> Triggers:
        """These triggers with each of ``stages`` set to its ``given`` one, or reset (off)
        when not given; the other stages as they are."""
        return replace(self, **{stage.value: given.get(stage, Trigger()) for stage in stages})


def trigger(code: int, probability: float) -> Trigger:
    """A checked trigger (``InvalidInput`` says which value is out of range)."""
    if not 400 <= code <= 599:
        raise InvalidInput(f"invalid code {code}: an SMTP error code is 400-599")
    if not 0 <= probability <= 100:
        raise InvalidInput(f"invalid probability {probability}: a percentage is 0-100")
    return Trigger(code, float(probability))


def configured(settings: ChaosSettings) -> Triggers:
    """The triggers ``smtp.chaos`` gives (or a ``PUT /api/v1/chaos`` body, same shape)."""
    given = (getattr(settings, stage.value) for stage in Stage)  # Triggers' field order
    return Triggers(*(trigger(t.code, t.probability) for t in given))


def chaos_reply(stage: Stage, code: int) -> str:
    """The reply of a trigger that fired: its code, the enhanced code of its class with
    subject 3.0 (RFC 3463 §3.4, "other or undefined mail system status": nothing the
    client did is wrong) and a text that says it is chaos."""
    return f"{code} {code // 100}.3.0 Chaos: {_WHAT[stage]} refused on purpose (chaos testing)"


class Chaos:
    """The triggers in force, shared by the capture server and the two chaos routes.

    ``draw``: the uniform random number in [0, 1) each command is judged by (a seeded
    one in tests). ``armed`` is kept up to date by :meth:`set`, so the engine reads one
    attribute per command while chaos is off."""

    __slots__ = ("_draw", "armed", "triggers")

    def __init__(
        self, triggers: Triggers | None = None, *, draw: Callable[[], float] = random.random
    ) -> None:
        self.triggers = triggers or Triggers()
        self.armed = self.triggers.armed  #: whether any stage can fire
        self._draw = draw

    def set(self, given: Mapping[Stage, Trigger], stages: Iterable[Stage] = Stage) -> Triggers:
        """Replace the triggers of ``stages`` (all by default): a stage not ``given`` is
        reset (off), as Mailpit's ``PUT`` does; stages outside ``stages`` are kept."""
        self.triggers = self.triggers.replaced(given, stages)
        self.armed = self.triggers.armed
        return self.triggers

    def reply(self, stage: Stage) -> str | None:
        """The chaos reply to answer at ``stage`` now, or None to go on."""
        code = self.triggers.reply(stage, self._draw())
        return None if code is None else chaos_reply(stage, code)
