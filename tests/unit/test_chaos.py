"""Chaos triggers (issue 10), the pure part: when a trigger fires for a draw, what it
answers, what setting some stages keeps of the others, and the settings' checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mailgate.errors import InvalidInput
from mailgate.ingest.chaos import Chaos, Stage, Trigger, Triggers, chaos_reply, configured, trigger
from mailgate.settings import ChaosSettings


def test_a_trigger_fires_below_its_probability() -> None:
    half = Triggers(rcpt=trigger(451, 50))
    assert half.reply(Stage.RCPT, 0.0) == 451
    assert half.reply(Stage.RCPT, 0.4999) == 451
    assert half.reply(Stage.RCPT, 0.5) is None
    assert half.reply(Stage.MAIL, 0.0) is None  # other stages: off
    assert Triggers(data=trigger(554, 0.5)).reply(Stage.DATA, 0.004) == 554  # a fraction
    assert Triggers(data=trigger(554, 0.5)).reply(Stage.DATA, 0.005) is None
    assert Triggers(auth=trigger(535, 100)).reply(Stage.AUTH, 0.99999) == 535
    assert Triggers().reply(Stage.RCPT, 0.0) is None  # 0 %: never, even for a draw of 0


def test_armed_only_while_a_probability_is_above_zero() -> None:
    chaos = Chaos()
    assert not chaos.armed
    chaos.set({Stage.DATA: trigger(451, 0.1)})
    assert chaos.armed
    chaos.set({Stage.DATA: trigger(451, 0)})
    assert not chaos.armed
    assert Chaos(Triggers(mail=Trigger(450, 1))).armed


def test_set_resets_the_stages_left_out_and_keeps_the_others() -> None:
    chaos = Chaos(Triggers(auth=Trigger(535, 10), data=Trigger(554, 20)))
    mailpits = (Stage.AUTH, Stage.MAIL, Stage.RCPT)  # Mailpit's PUT: no data stage
    got = chaos.set({Stage.RCPT: trigger(451, 50)}, mailpits)
    assert got == Triggers(rcpt=Trigger(451, 50), data=Trigger(554, 20))
    assert chaos.triggers is got
    assert chaos.set({}) == Triggers()  # every stage: all off


def test_reply_draws_and_says_it_is_chaos() -> None:
    draws = iter([0.1, 0.9])
    chaos = Chaos(Triggers(rcpt=Trigger(451, 50)), draw=lambda: next(draws))
    assert (
        chaos.reply(Stage.RCPT) == "451 4.3.0 Chaos: recipient refused on purpose (chaos testing)"
    )
    assert chaos.reply(Stage.RCPT) is None
    assert chaos_reply(Stage.DATA, 554).startswith("554 5.3.0 Chaos: message")
    assert chaos_reply(Stage.AUTH, 454).startswith("454 4.3.0 Chaos: authentication")
    assert chaos_reply(Stage.MAIL, 550).startswith("550 5.3.0 Chaos: sender")


@pytest.mark.parametrize(
    ("code", "probability", "error"),
    [(250, 5, "invalid code 250"), (600, 5, "invalid code 600"), (451, 101, "probability 101"),
     (451, -1, "probability -1")],
)  # fmt: skip
def test_trigger_refuses_values_out_of_range(code: int, probability: float, error: str) -> None:
    with pytest.raises(InvalidInput, match=error):
        trigger(code, probability)


def test_settings_give_the_triggers() -> None:
    settings = ChaosSettings.model_validate({"rcpt": {"probability": 12.5}, "data": {"code": 554}})
    assert configured(settings) == Triggers(rcpt=Trigger(451, 12.5), data=Trigger(554, 0))
    assert configured(ChaosSettings()) == Triggers()


@pytest.mark.parametrize(
    ("value", "error"),
    [({"smtp": {}}, "unknown chaos stage smtp"), ({"rcpt": {"code": 399}}, "rcpt.code"),
     ({"rcpt": {"probability": 100.5}}, "rcpt.probability"), ({"rcpt": {"odds": 1}}, "odds"),
     ({"rcpt": {"probability": True}}, "not true or false")],
)  # fmt: skip
def test_settings_refuse_what_cannot_work(value: object, error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        ChaosSettings.model_validate(value)
