"""Compose variables: the app's `.env` file and compose's `${...}` interpolation.

The agent writes a compose app's `envVars` into the app's `.env` file, and
compose substitutes from it, so the image a service really runs can only be
known with those variables. This module reads dotenv text and interpolates
image strings the way compose does:

- `$VAR`, `${VAR}`; `${VAR:-default}` (unset or empty), `${VAR-default}`
  (unset); `${VAR:?error}`, `${VAR?error}`; `${VAR:+other}`, `${VAR+other}`;
  defaults may nest (`${A:-${B}}`); `$$` is a literal `$`.
- dotenv: `KEY=value` or `KEY: value`, an optional `export ` prefix, `#`
  comments (after whitespace on an unquoted value), single quotes (literal),
  double quotes (escapes, may span lines). Unquoted and double-quoted values
  may refer to other variables; they are expanded when used.

Fail safe: a variable that is unset and has no default is an error, never an
empty string (the image the app pulls would be unknown); so is malformed
dotenv text. Errors are VariableError with a message that names no file: the
caller adds it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")  # two-character ones first
_DOUBLE_QUOTED_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$$"}


class VariableError(ValueError):
    """A variable or template that cannot be resolved; the message says which."""


@dataclass(frozen=True)
class Variable:
    value: str
    template: bool = False  # expanded when used (unquoted/double-quoted dotenv values)


def literal_variables(values: Mapping[str, str]) -> dict[str, Variable]:
    """Variables taken as they are (an app's envVars)."""
    return {name: Variable(value) for name, value in values.items()}


def interpolate(text: str, variables: Mapping[str, Variable]) -> str:
    """`text` with every variable substituted, as compose would."""
    return _Interpolation(variables).expand(text)


def parse_dotenv(text: str) -> dict[str, Variable]:
    """The variables a dotenv file defines; the last definition of a name wins."""
    variables: dict[str, Variable] = {}
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        start, line = number + 1, lines[number].strip()
        number += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        separator = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        key = line[:separator].strip() if separator >= 0 else line
        if not key or any(char.isspace() for char in key):
            raise VariableError(f"line {start}: not KEY=value")
        if separator < 0:
            continue  # a bare name passes the caller's environment through: unknown here
        value = line[separator + 1 :].lstrip()
        quote = value[:1]
        if quote not in ("'", '"'):
            # an unquoted value ends at a comment that follows whitespace
            variables[key] = Variable(re.split(r"\s#", value, maxsplit=1)[0].rstrip(), True)
            continue
        body, rest = value[1:], ""
        while (end := _closing_quote(body, quote)) < 0:
            if number >= len(lines):
                raise VariableError(f"line {start}: unterminated {quote} quote")
            body += "\n" + lines[number]
            number += 1
        body, rest = body[:end], body[end + 1 :].strip()
        if rest and not rest.startswith("#"):
            raise VariableError(f"line {start}: unexpected text after the closing quote")
        if quote == "'":
            variables[key] = Variable(body)
        else:
            unescaped = re.sub(
                r"\\(.)", lambda m: _DOUBLE_QUOTED_ESCAPES.get(m[1], "\\" + m[1]), body
            )
            variables[key] = Variable(unescaped, True)
    return variables


def _closing_quote(body: str, quote: str) -> int:
    escaped = False
    for index, char in enumerate(body):
        if char == quote and not escaped:
            return index
        escaped = quote == '"' and char == "\\" and not escaped
    return -1


class _Interpolation:
    def __init__(self, variables: Mapping[str, Variable]) -> None:
        self._variables = variables
        self._resolving: list[str] = []  # template variables being expanded: cycle guard

    def expand(self, text: str) -> str:
        out: list[str] = []
        index = 0
        while (dollar := text.find("$", index)) >= 0:
            out.append(text[index:dollar])
            following = text[dollar + 1 : dollar + 2]
            if following == "$":
                out.append("$")
                index = dollar + 2
            elif following == "{":
                end = _closing_brace(text, dollar + 2)
                if end < 0:
                    raise VariableError(f"unclosed '${{' in {text!r}")
                out.append(self._braced(text[dollar + 2 : end], text))
                index = end + 1
            elif name := _NAME_RE.match(text, dollar + 1):
                out.append(self._required(name[0], text))
                index = name.end()
            else:
                raise VariableError(f"invalid '$' in {text!r} (a literal '$' is written '$$')")
        out.append(text[index:])
        return "".join(out)

    def _braced(self, body: str, text: str) -> str:
        name = _NAME_RE.match(body)
        if name is None:
            raise VariableError(f"invalid variable '${{{body}}}' in {text!r}")
        rest = body[name.end() :]
        if not rest:
            return self._required(name[0], text)
        operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
        if operator is None:
            raise VariableError(f"invalid variable '${{{body}}}' in {text!r}")
        argument = rest[len(operator) :]
        value = self._value(name[0])
        # the ':' forms treat an empty value as unset
        if value is not None and (value or not operator.startswith(":")):
            return self.expand(argument) if operator.endswith("+") else value
        if operator.endswith("-"):
            return self.expand(argument)
        if operator.endswith("+"):
            return ""
        why = "unset" if value is None else "empty"  # ? and :?
        raise VariableError(f"variable {name[0]} is {why} in {text!r}: {argument}")

    def _required(self, name: str, text: str) -> str:
        value = self._value(name)
        if value is None:
            raise VariableError(f"variable {name} is not set (in .env or envVars) in {text!r}")
        return value

    def _value(self, name: str) -> str | None:
        variable = self._variables.get(name)
        if variable is None:
            return None
        if not variable.template:
            return variable.value
        if name in self._resolving:
            raise VariableError(f"variable {name} refers to itself")
        self._resolving.append(name)
        try:
            return self.expand(variable.value)
        finally:
            self._resolving.pop()


def _closing_brace(text: str, start: int) -> int:
    """Index of the `}` closing a `${` whose body starts at `start`; -1 if none."""
    depth = 1
    index = start
    while index < len(text):
        if text.startswith("$$", index):
            index += 2
            continue
        if text.startswith("${", index):
            depth += 1
            index += 2
            continue
        if text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return -1
