"""Settings errors in one line: the key, where it came from (a ``GPULEDGER_*`` variable or a config file key), what
is wrong in plain words and, for a misspelling, the nearest valid key.

A value is never echoed: a setting may name where a secret lives, and a misplaced secret may sit in any key, so only
keys are named (pydantic's ``input_value`` is dropped).
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

Key = str | int

PLAIN = {
    "int_parsing": "should be a whole number",
    "int_type": "should be a whole number",
    "int_from_float": "should be a whole number, not a fraction",
    "float_parsing": "should be a number",
    "float_type": "should be a number",
    "bool_parsing": "should be true or false",
    "bool_type": "should be true or false",
    "string_type": "should be a string",
    "path_type": "should be a path (a string)",
}
TABLE_TYPES = {"model_type", "model_attributes_type", "dict_type"}


class SettingsError(Exception):
    """A config file that is missing, not TOML, or holds a bad value; a bad ``GPULEDGER_*`` variable."""


class BadConfigFile(SettingsError):
    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"config file {path} {problem}")
        self.path = path


class BadVariable(SettingsError):
    """A ``GPULEDGER_*`` variable whose setting takes JSON (a table or a list) and that does not hold JSON."""

    def __init__(self, field: str, reason: str, expected: str) -> None:
        super().__init__(
            f"the variable GPULEDGER_{field.upper()} is not valid JSON ({reason}): set it to a JSON {expected}"
        )
        self.field = field


class BadSetting(SettingsError):
    """A value that pydantic refused, explained by :func:`explain`."""


@dataclass(frozen=True)
class Origin:
    """What one source gave: the config file's table (``file`` set) or the environment's values (``file`` None)."""

    data: Mapping[str, Any]
    file: Path | None = None

    def key(self, keys: Sequence[Key], *, section: bool = False) -> str:
        names = _names(keys)
        if not names:  # a check of the whole settings object, not of one key
            return "the settings object"
        if self.file is None:
            var = f"the variable GPULEDGER_{names[0].upper()}"
            return f"{var} key `{'.'.join(names[1:])}`" if len(names) > 1 else var
        if section:
            return f"{self.file} section `[{'.'.join(names)}]`"
        if len(names) == 1:
            return f"{self.file} key `{names[0]}`"
        return f"{self.file} key `[{'.'.join(names[:-1])}] {names[-1]}`"


def json_kind(annotation: Any) -> str:
    """What a complex setting holds in JSON: an array (a list) or an object (a table or a section)."""
    for arg in (annotation, *typing.get_args(annotation)):  # ``list[str] | None`` is a list too
        if arg in (list, tuple, set) or typing.get_origin(arg) in (list, tuple, set):
            return "array"
        if arg is dict or typing.get_origin(arg) is dict or _model_of(arg) is not None:
            return "object"
    return "object"


def explain(model: type[BaseModel], errors: Sequence[ErrorDetails], env: Origin, file: Origin | None) -> BadSetting:
    """One line for the first of pydantic's ``errors`` (alternatives of a union on the same key are joined)."""
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a misspelling explains a miss
    origin, keys = _origin(first, env, file)
    if first["type"] == "extra_forbidden":
        return BadSetting(_unknown(model, origin, keys))
    if first["type"] == "missing":
        where = origin.key(keys[:-1], section=True) if len(keys) > 1 else f"setting `{keys[-1]}`"
        return BadSetting(f"{where} lacks the required key `{keys[-1]}`: add it")
    found = [_origin(error, env, file) for error in errors]
    for other, other_keys in found:  # of a union's alternatives, the one that reached deepest into the input
        if other == origin and other_keys[: len(keys)] == keys and len(other_keys) > len(keys):
            keys = other_keys
    problems: list[str] = []
    for error, at in zip(errors, found, strict=True):
        if at == (origin, keys):
            problem = _plain(error, origin)
            if problem not in problems:
                problems.append(problem)
    alternatives = [problems[0], *(p.removeprefix("should be ") for p in problems[1:])]
    return BadSetting(f"{origin.key(keys)} {' or '.join(alternatives)}")


def _origin(error: ErrorDetails, env: Origin, file: Origin | None) -> tuple[Origin, list[Key]]:
    """The source that gave the refused value (the environment wins a tie: it overrides the file) and the keys
    of ``error``'s location that name input (pydantic adds the tags of union members, which are not keys)."""
    loc = list(error["loc"])
    missing = error["type"] == "missing"
    in_env = _present(env.data, loc, missing)
    in_file = _present(file.data, loc, missing) if file is not None else []
    if file is not None and (len(in_file) > len(in_env) or (missing and in_file and len(in_file) == len(in_env))):
        return file, in_file
    return env, in_env or loc[:1]


def _present(data: Any, loc: Sequence[Key], missing: bool) -> list[Key]:
    keys: list[Key] = []
    for i, key in enumerate(loc):
        in_list = isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data)
        if in_list or (isinstance(data, Mapping) and key in data):
            data = data[key]
        elif isinstance(key, str) and isinstance(data, Mapping) and i < len(loc) - 1:
            continue  # the tag of a union member (``dict[str,float]``), not a key
        else:
            if missing and i == len(loc) - 1 and keys:
                keys.append(key)
            break
        keys.append(key)
    return keys


def _names(keys: Sequence[Key]) -> list[str]:
    names: list[str] = []
    for key in keys:
        if isinstance(key, int) and names:
            names[-1] += f"[{key}]"
        else:
            names.append(str(key))
    return names


def _plain(error: ErrorDetails, origin: Origin) -> str:
    kind = error["type"]
    if kind in TABLE_TYPES:
        return "should be a table (a [section])" if origin.file is not None else "should be a JSON object"
    if kind == "list_type":
        return "should be a list" if origin.file is not None else "should be a JSON array"
    if kind in PLAIN:
        return PLAIN[kind]
    msg = error["msg"].removeprefix("Value error, ")
    if msg.startswith("Input should be"):
        return "should be" + msg.removeprefix("Input should be")
    if msg.startswith(("should ", "must ")):
        return msg
    return f"is wrong: {msg[:1].lower()}{msg[1:]}"


def _sections(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    return {name: sub for name, field in model.model_fields.items() if (sub := _model_of(field.annotation))}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _model_at(model: type[BaseModel], keys: Sequence[Key]) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
    for key in keys:
        field = current.model_fields.get(str(key)) if current is not None else None
        current = _model_of(field.annotation) if field is not None else None
    return current


def _unknown(model: type[BaseModel], origin: Origin, keys: list[Key]) -> str:
    key = str(keys[-1])
    value: Any = origin.data
    for k in keys:
        value = value[k]
    is_section = isinstance(value, Mapping) and origin.file is not None
    where = origin.key(keys, section=is_section)
    parent = _model_at(model, keys[:-1])
    if parent is None:
        return f"{where} is not a setting: remove it"
    scope = f" of [{'.'.join(_names(keys[:-1]))}]" if len(keys) > 1 else ""
    sections = _sections(parent)
    here = {name: (f"[{name}]" if name in sections else name) for name in parent.model_fields}
    if len(keys) == 1:
        nested = [f"[{name}] {key}" for name, sub in sections.items() if key in sub.model_fields]
        if nested:
            return f"{where} is not a top-level setting: did you mean `{'` or `'.join(nested)}`?"
        here |= {f"{name}.{k}": f"[{name}] {k}" for name, sub in sections.items() for k in sub.model_fields}
    guess = _nearest(key, here)
    if guess:
        return f"{where} is not a setting{scope}: did you mean `{guess}`?"
    if scope:
        return f"{where} is not a setting{scope}: its keys are {', '.join(here.values())}"
    return f"{where} is not a setting: remove it (every setting is in the Configuration table of README.md)"


def _nearest(key: str, candidates: Mapping[str, str]) -> str | None:
    """The display name of the candidate closest to ``key`` (difflib's ratio, 0.6 at least); a nested key is
    compared by its own name, and a top-level one wins a tie."""
    own = {name: name.rsplit(".", 1)[-1] for name in candidates}
    close = difflib.get_close_matches(key, list(set(own.values())), n=1)
    if not close:
        return None
    return next(candidates[name] for name in sorted(own, key=lambda n: "." in n) if own[name] == close[0])
