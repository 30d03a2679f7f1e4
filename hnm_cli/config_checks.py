"""What every per-stage config class shares: type checking of each value against its field (StrEnum words,
numbers, tables), `merged` overrides, `to_params` for the manifest, and the small value checks (> 0, seeds,
device words). `hnm_cli.config` declares the stage classes on top of this.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from dataclasses import fields
from enum import StrEnum
from typing import Any, ClassVar, Self, Union, get_args, get_origin, get_type_hints

from hnm_cli.errors import ConfigError


class StageConfig:
    """Shared behaviour of the per-stage config dataclasses."""

    section: ClassVar[str] = ""  # the TOML table, for messages ("mine.strategy must be one of ...")

    def __post_init__(self) -> None:
        # Every value is checked against its field's type here, whether it came from a default, TOML or a flag,
        # so a wrong type fails with the key's name before a stage touches anything. Choice fields end up
        # holding their StrEnum member, so consumers compare against the one declaration in hnm_cli.choices.
        for name, hint in get_type_hints(type(self)).items():
            if get_origin(hint) is ClassVar:
                continue
            value = checked(getattr(self, name), hint, f"{self.section}.{name}")
            object.__setattr__(self, name, value)

    def merged(self, **overrides: Any) -> Self:
        """A copy with every non-None override applied, validated."""
        given = {k: v for k, v in overrides.items() if v is not None}
        names = {f.name for f in fields(self)}  # type: ignore[arg-type]
        unknown = set(given) - names
        if unknown:
            raise ConfigError(f"unknown {type(self).__name__} key(s): {', '.join(sorted(unknown))}")
        new = dataclasses.replace(self, **given)  # type: ignore[type-var]
        new.validate()
        return new

    def without(self, *keys: str) -> Self:
        """A copy with optional `keys` set to None (a flag's "none" clearing what the defaults or a file set)."""
        new = dataclasses.replace(self, **dict.fromkeys(keys))  # type: ignore[type-var]
        new.validate()
        return new

    def validate(self) -> None:
        """Raise ConfigError for invalid values; stages override this."""

    # Options added after artifacts of this stage already existed, with their default. While an option is at
    # its default it is left out of `manifest.params`, so adding it did not make every older artifact stale.
    late_options: ClassVar[dict[str, Any]] = {}
    # Options that say how a stage runs, never what it writes (the executor: a Ray run writes the bytes a local run
    # writes). Left out of `manifest.params` at every value, so they are no part of the fingerprint: switching
    # executors leaves an artifact up to date, and artifacts from before the option existed stay up to date too.
    run_options: ClassVar[tuple[str, ...]] = ()

    def to_params(self) -> dict[str, Any]:
        """The resolved config as plain data, for `manifest.params`."""
        params = dataclasses.asdict(self)  # type: ignore[call-overload]
        params = {k: v.value if isinstance(v, StrEnum) else v for k, v in params.items() if k not in self.run_options}
        return {k: v for k, v in params.items() if not (k in self.late_options and v == self.late_options[k])}


def type_name(hint: Any) -> str:
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return "one of " + ", ".join(m.value for m in hint)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join("absent" if a is type(None) else type_name(a) for a in args)
    if origin is tuple:
        return f"a list of {type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a table of numbers"
    return getattr(hint, "__name__", str(hint))


def checked(value: Any, hint: Any, key: str) -> Any:
    """`value` as the field type `hint` wants it (a StrEnum member, a tuple), or ConfigError naming `key`."""

    def bad() -> ConfigError:
        return ConfigError(f"{key} must be {type_name(hint)}; got {value!r}")

    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        # TOML has no null: "none" clears an optional key a default set (mine.relative_margin = "none").
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() == "none")):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return checked(value, arg, key)
            except ConfigError:
                pass
        raise bad()
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        try:
            return hint(value)
        except ValueError:
            raise bad() from None
    if hint is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise bad()
        return value
    if hint is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if origin is tuple:
        if not isinstance(value, tuple | list):
            raise bad()
        return tuple(checked(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad()
        return {k: checked(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and not isinstance(value, hint):
        raise bad()
    return value


def positive(value: Any, key: str, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{key} must be > 0; got {value!r}")


SEED_LIMIT = 2**32  # numpy's and transformers' seeds are unsigned 32-bit integers


def check_seed(value: Any, key: str) -> None:
    if not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise ConfigError(f"{key} must be an integer in 0 .. 2**32 - 1; got {value!r}")


DEVICES = "auto, cpu, cuda, cuda:N or mps"


_DEVICE_RE = re.compile(r"(auto|cpu|mps|cuda(:[0-9]+)?)")


def check_device(value: Any, key: str) -> None:
    """A device word (whether this machine has it is checked where it is used: encoding.devices.torch_device)."""
    if not isinstance(value, str) or not _DEVICE_RE.fullmatch(value):
        raise ConfigError(f"{key} must be {DEVICES}; got {value!r}")
