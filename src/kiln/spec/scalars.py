"""Checks of YAML scalars that several parts of the workflow share (env names, literal texts)."""

from __future__ import annotations

import re

from kiln.spec.loader import YamlFloat, YamlInt

__all__ = ["ENV_NAME_PATTERN", "check_env_name", "scalar_text"]

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def check_env_name(name: str) -> str:
    """Return ``name`` if it is a valid environment variable name; raise ``ValueError`` otherwise."""
    if not re.fullmatch(ENV_NAME_PATTERN, name):
        raise ValueError(
            f"`{name}` is not a valid environment variable name "
            "(letters, digits and `_`, not starting with a digit)"
        )
    return name


def scalar_text(value: object) -> object:
    """A YAML number or boolean as the text a shell would see; anything else unchanged.

    GitHub Actions also turns scalars into strings, but prints 3.10 as "3.1"; the text is kept as
    written (:class:`YamlInt`/:class:`YamlFloat` carry it) and booleans are spelled the way shells
    test them.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, YamlInt | YamlFloat):
        return value.text
    if isinstance(value, int | float):
        return str(value)
    return value
