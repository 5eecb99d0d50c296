"""What one key allows, as a ``Rule``: the building blocks of ``launcher.validation``'s table, and
the rule a schema field (``launcher.schema``, ``trainer.options``) derives from its type and its
``check``.

A rule is a predicate and the words for it: ``allowed`` is what the one-line error says after
``allowed:``, so the message and the check cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from launcher.config import MODULE_NAME, split_endpoint
from launcher.errors import ConfigError
from trainer.options import NON_BLANK, NON_EMPTY, Check, shown


@dataclass(frozen=True)
class Rule:
    """What one key allows: ``accepts`` decides, ``allowed`` says it in the error message."""

    allowed: str
    accepts: Callable[[Any], bool]

    def __or__(self, other: Rule) -> Rule:
        return Rule(f"{self.allowed} or {other.allowed}",
                    lambda value: self.accepts(value) or other.accepts(value))

    def check(self, key: str, value: Any, source: str | None = None) -> None:
        """``source``: the interpolation the value came from, named so the key to change is clear."""
        if not self.accepts(value):
            raise ConfigError(key, value, f"allowed: {self.allowed}" + (f" (it is {source})" if source else ""))


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Finite: nan and inf are no count of seconds, no rate and no size."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(low: float | None = None, high: float | None = None, what: str = "an integer") -> Rule:
    bounds = f" in {low}-{high}" if high is not None else f" >= {low}" if low is not None else ""
    return Rule(what + bounds, lambda value: is_int(value) and (low is None or value >= low)
                and (high is None or value <= high))


def number(low: float, high: float | None = None, *, exclusive: bool = False,
           what: str = "a number") -> Rule:
    """A finite number from ``low`` (to ``high``), both included unless ``exclusive``."""
    if high is None:
        bounds = f"{'>' if exclusive else '>='} {low:g}"
    else:
        bounds = f"in {'(' if exclusive else '['}{low:g}, {high:g}{')' if exclusive else ']'}"

    def accepts(value: Any) -> bool:
        if not is_number(value):
            return False
        above = value > low if exclusive else value >= low
        below = high is None or (value < high if exclusive else value <= high)
        return above and below

    return Rule(f"{what} {bounds}", accepts)


def choice(*values: Any, normalise: Callable[[Any], Any] | None = None) -> Rule:
    """One of ``values``, of the same type (``1`` is not ``true``); ``normalise`` maps a value
    first (``trainer.precision``: 32 and "32" are one choice)."""
    def accepts(value: Any) -> bool:
        if normalise is not None:
            return not isinstance(value, bool) and normalise(value) in values
        return any(type(value) is type(allowed) and value == allowed for allowed in values)

    return Rule(", ".join(shown(value) for value in values), accepts)


def listof(item: Rule, items: str) -> Rule:
    """A non-empty list, every item allowed by ``item`` (``items`` names them in the message)."""
    return Rule(f"a list of {items}", lambda value: isinstance(value, list) and bool(value)
                and all(item.accepts(entry) for entry in value))


def matching(pattern: str, what: str) -> Rule:
    """A string that ``pattern`` matches as a whole."""
    compiled = re.compile(pattern)
    return Rule(what, lambda value: isinstance(value, str) and compiled.fullmatch(value) is not None)


def is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


NULL = Rule("null", lambda value: value is None)
FINITE = Rule("a number", is_number)
AUTO = choice("auto")
BOOLEAN = choice(True, False)
TEXT = matching(NON_BLANK, str(NON_EMPTY.what))
HOST = Rule("a host name or address", lambda value: is_text(value) and not any(c.isspace() for c in value))
DOTTED_NAME = Rule("a dotted Python name such as mypkg.MyNet",
                   lambda value: isinstance(value, str) and bool(MODULE_NAME.fullmatch(value)))
QUALIFIED_NAME = Rule("a module and a name in it, such as mypkg.step",
                      lambda value: DOTTED_NAME.accepts(value) and "." in value)
INSTANTIABLE = Rule("a mapping with a _target_ (a dotted Python name)",
                    lambda value: isinstance(value, Mapping) and DOTTED_NAME.accepts(value.get("_target_")))
ENDPOINT = Rule("HOST:PORT with a port in 1-65535",
                lambda value: isinstance(value, str) and split_endpoint(value) is not None)
ARGUMENTS = Rule("a list of arguments, or one string split as a shell would",
                 lambda value: isinstance(value, str) or isinstance(value, list)
                 and all(isinstance(arg, (str, int, float, bool)) for arg in value))
EXISTING_FILE = Rule("the path of an existing file",
                     lambda value: is_text(value) and Path(value).expanduser().is_file())
RANKS = choice("all") | integer(0, what="a rank") | listof(integer(0), "ranks like [0,3]")
COUNT = integer(1)
HYDRA_CONVERT = choice("none", "partial", "object", "all")  # Hydra's _convert_ of an instantiated node


def checked(check: Check | None, kind: Any) -> Rule:
    """The rule of a value of type ``kind`` (int, float, bool, str, a str Enum, Any) with
    ``check``; a str's choices match as the value reads (``precision=32`` is "32")."""
    check = check or Check()
    if isinstance(kind, type) and issubclass(kind, Enum):
        return choice(*(member.value for member in kind))
    if kind is bool:
        return BOOLEAN
    if check.choices:
        return choice(*check.choices, normalise=str if kind is str else None)
    # The words are the launcher's; the range and the pattern are the check's own predicate, the
    # one the trainer applies to a config it is given by hand.
    if check.pattern is not None:
        return Rule(check.what or "a string", lambda value: isinstance(value, str) and check.accepts(value))
    if kind is int:
        words = integer(check.low, check.high, what=check.what or "an integer").allowed
        return Rule(words, lambda value: is_int(value) and check.accepts(value))
    if kind is float:
        if check.low is None:
            return FINITE
        words = number(check.low, check.high, exclusive=check.exclusive, what=check.what or "a number").allowed
        return Rule(words, lambda value: is_number(value) and check.accepts(value))
    if kind is str:
        return Rule("a string", lambda value: isinstance(value, str))
    raise TypeError(f"no rule for a field of type {kind} with {check}: give its check a Rule")


def field_rule(item: dataclasses.Field, kind: Any) -> Rule:
    """The rule a schema field derives: from its ``check`` (a ``Check``, or a ``Rule`` where the
    words need code, such as ``auto or an integer``) and its type; ``Optional`` adds null."""
    nullable = typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)
    if nullable:
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    check = item.metadata.get("check")
    rule = check if isinstance(check, Rule) else checked(check, kind)
    return NULL | rule if nullable else rule


def schema_rules(cls: type, prefix: str) -> dict[str, Rule]:
    """``prefix + field``'s rule for every field of the dataclass ``cls``, nested blocks by their
    dotted keys (``trainer.early_stop.patience``)."""
    hints = typing.get_type_hints(cls)
    rules: dict[str, Rule] = {}
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        if dataclasses.is_dataclass(kind):
            rules.update(schema_rules(kind, f"{prefix}{item.name}."))  # type: ignore[arg-type]
        else:
            rules[prefix + item.name] = field_rule(item, kind)
    return rules
