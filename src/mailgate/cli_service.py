"""What the ``mailgate webhooks`` and ``mailgate smtp-users`` command groups share: one
parser per action with the database options, one way to run it and say what failed."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import ValidationError

from mailgate.cli_accounts import where_options
from mailgate.errors import Conflict, InvalidInput, NotFound
from mailgate.settings import Settings

__all__ = ["SettingsOf", "command_group", "invalid"]

SettingsOf = Callable[[argparse.Namespace], Settings]
Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def command_group(
    sub: Any, name: str, help: str, settings_of: SettingsOf, command: Command
) -> Callable[[str, str], argparse.ArgumentParser]:
    """Register ``mailgate NAME``; the function returned adds one of its actions (run by
    ``command`` with the action's name in ``args.action``)."""
    group = sub.add_parser(name, help=help)
    actions = group.add_subparsers(title=f"{name} commands", required=True, metavar="COMMAND")

    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(command(settings_of(args), args))
        except (NotFound, Conflict, InvalidInput) as exc:
            print(f"mailgate: error: {exc}", file=sys.stderr)
            return 1

    def action(action_name: str, action_help: str) -> argparse.ArgumentParser:
        # no abbreviations: `--secret X` must be an error, not `--secret-stdin X`
        p: argparse.ArgumentParser = actions.add_parser(
            action_name, help=action_help, description=action_help, allow_abbrev=False
        )
        where_options(p)
        p.set_defaults(func=run, action=action_name)
        return p

    return action


def invalid(exc: ValidationError) -> int:
    """Say what was wrong with each field (never the value given); the exit status 2."""
    problems = exc.errors(include_input=False, include_url=False)
    reasons = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
    print(f"mailgate: error: {reasons}", file=sys.stderr)
    return 2
