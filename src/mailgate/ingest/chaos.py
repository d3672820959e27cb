"""Chaos: answer a chosen SMTP error at a chosen stage with a probability (issue 10).

Mailpit's triggers, in its shape: ``Sender`` (MAIL FROM), ``Recipient`` (RCPT TO) and
``Authentication`` (AUTH), each an ``ErrorCode`` (400–599, RFC 5321 §4.2: a 4yz or
5yz reply) and a ``Probability`` in whole percent (0 = off). The settings live in
memory and change at run time (``PUT /mailpit/api/v1/chaos``); a pure core decides,
given the random draw, whether one command fails. The SMTP server does not consult
them yet.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from mailgate.errors import InvalidInput

__all__ = ["Chaos", "Stage", "Trigger", "Triggers"]


class Stage(StrEnum):
    AUTHENTICATION = "Authentication"  #: the AUTH command
    SENDER = "Sender"  #: MAIL FROM
    RECIPIENT = "Recipient"  #: each RCPT TO


@dataclass(frozen=True, slots=True)
class Trigger:
    error_code: int = 451  #: Mailpit's default: 451 (local error in processing)
    probability: int = 0  #: whole percent; 0: never

    def fires(self, draw: float) -> bool:
        """Whether a command fails, for a uniform ``draw`` in [0, 1)."""
        return draw * 100 < self.probability


@dataclass(frozen=True, slots=True)
class Triggers:
    authentication: Trigger = Trigger()
    sender: Trigger = Trigger()
    recipient: Trigger = Trigger()

    def at(self, stage: Stage) -> Trigger:
        return {
            Stage.AUTHENTICATION: self.authentication,
            Stage.SENDER: self.sender,
            Stage.RECIPIENT: self.recipient,
        }[stage]

    def reply(self, stage: Stage, draw: float) -> int | None:
        """The error code to answer at ``stage`` for this ``draw``, or None to go on."""
        trigger = self.at(stage)
        return trigger.error_code if trigger.fires(draw) else None


def trigger(error_code: int, probability: int) -> Trigger:
    """A checked trigger (``InvalidInput`` says which value is out of range)."""
    if not 400 <= error_code <= 599:
        raise InvalidInput(f"invalid ErrorCode {error_code}: it must be 400-599")
    if not 0 <= probability <= 100:
        raise InvalidInput(f"invalid Probability {probability}: it must be 0-100")
    return Trigger(error_code, probability)


class Chaos:
    """The triggers in force; ``set`` replaces them all (an omitted one is reset)."""

    def __init__(self, triggers: Triggers | None = None) -> None:
        self.triggers = triggers or Triggers()

    def set(self, given: dict[Stage, Trigger]) -> Triggers:
        self.triggers = replace(
            Triggers(),
            authentication=given.get(Stage.AUTHENTICATION, Trigger()),
            sender=given.get(Stage.SENDER, Trigger()),
            recipient=given.get(Stage.RECIPIENT, Trigger()),
        )
        return self.triggers
