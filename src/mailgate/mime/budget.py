"""How much of a message's MIME fields the email package is given to read.

The email package reads a MIME parameter in about 0.05 ms (its header parser walks
it token by token, in Python), and ``Message.get_param`` splits a field by slicing
one parameter off the rest at a time, quadratic in the field's length. A 90 kB
Content-Type of 10,000 parameters took 1.4 s to parse and 2.3 s to list Mailpit's
parts, on every read of the message; 30,000 took 6.5 s and 10 s. A message of
nothing but parameters, within the 10 MiB a capture accepts, would hold a worker
thread for many minutes per read. So what a field hands on is bounded:

* each field, its first :data:`MAX_FIELD_PARAMETERS` parameters (what precedes its
  next ";") within :data:`MAX_FIELD_LENGTH` characters (cut at the last ";" within
  them, where there is one);
* each message, :data:`MESSAGE_PARAMETERS` parameters and :data:`MESSAGE_LENGTH`
  characters over all its MIME fields, in document order; past them a field keeps
  only its value before its first ";" (the type, the disposition, the encoding), of
  at most :data:`BARE_LENGTH` characters.

A parameter here is a ";", quoted or not: the count never needs a parse. A field
within the bounds is handed on exactly as it is; real mail stays far within them
(the corpus in ``tests/data``: at most 3 parameters and 106 characters a field, 20
and 949 a message; an RFC 2231 filename of 255 CJK characters takes about 35
sections and 2.3 kB, and a message at the 1,000-part bound with Outlook's four
Content-Disposition parameters on every part about 5,000 and 200 kB). What a field
loses stays in the raw source; the parser says how many fields lost something
(:meth:`FieldBudget.problems`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BARE_LENGTH",
    "MAX_FIELD_LENGTH",
    "MAX_FIELD_PARAMETERS",
    "MESSAGE_LENGTH",
    "MESSAGE_PARAMETERS",
    "FieldBudget",
]

MAX_FIELD_PARAMETERS = 64  #: parameters (";") read of one MIME field
MAX_FIELD_LENGTH = 8 * 1024  #: characters read of one MIME field
MESSAGE_PARAMETERS = 8 * 1024  #: parameters read over all the MIME fields of a message
MESSAGE_LENGTH = 512 * 1024  #: characters read over all the MIME fields of a message
BARE_LENGTH = 256  #: characters read of a field past the message's budget


@dataclass(slots=True)
class FieldBudget:
    """What is left to read of one message's MIME fields; one per parse, in field order."""

    parameters: int = MESSAGE_PARAMETERS
    length: int = MESSAGE_LENGTH
    cut: int = 0  #: fields cut to the bounds of one field
    spent: int = 0  #: fields cut because the message's budget was spent

    def bounded(self, fields: dict[str, str]) -> dict[str, str]:
        """``fields`` (name to value) as the email package may read them; charged."""
        return {name: self._field(value) for name, value in fields.items()}

    def _field(self, value: str) -> str:
        own = _cut(value, MAX_FIELD_PARAMETERS, MAX_FIELD_LENGTH)
        if self.length > 0:
            kept = _cut(own, self.parameters, max(self.length, BARE_LENGTH))
        else:
            kept = _cut(own, 0, BARE_LENGTH)
        self.cut += own != value
        self.spent += kept != own
        self.parameters -= kept.count(";")
        self.length -= len(kept)
        return kept

    def problems(self) -> list[str]:
        """What the parse of the message could not read, for ``ParsedMessage.problems``."""
        found = []
        if self.cut:
            found.append(
                f"mime: {_fields(self.cut)} of more than {MAX_FIELD_PARAMETERS} parameters"
                f" or {MAX_FIELD_LENGTH} characters read up to there"
                f" (the raw source has {_them(self.cut)} whole)"
            )
        if self.spent:
            found.append(
                f"mime: more than {MESSAGE_PARAMETERS} parameters or {MESSAGE_LENGTH}"
                f" characters in the MIME fields of the message; {_fields(self.spent)} read"
                f" past that cut short (the raw source has {_them(self.spent)} whole)"
            )
        return found


def _fields(count: int) -> str:
    return f"{count} MIME field{'' if count == 1 else 's'}"


def _them(count: int) -> str:
    return "it" if count == 1 else "them"


def _cut(value: str, parameters: int, length: int) -> str:
    """``value`` before its ``parameters + 1``-th ";", within ``length`` characters
    (cut at the last ";" within them, if any); ``value`` itself when it is within both."""
    if len(value) <= length and value.count(";") <= parameters:
        return value
    end = -1
    for _ in range(parameters + 1):
        end = value.find(";", end + 1, length + 1)
        if end < 0:
            break
    if end < 0:  # too long, not too many: cut at the last ";" within the length, if any
        end = value.rfind(";", 0, length + 1)
        end = end if end > 0 else length
    return value[:end].rstrip(" \t\r\n")
