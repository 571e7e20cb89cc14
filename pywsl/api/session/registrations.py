"""Which registration a call means, and the checks and changes one registration gets.

What `LxssUserSessionImpl` does with its registry before and after the work of a call: `OpenOrDefault`
(a distribution by name, GUID or the default), `_ValidateDistributionNameAndPathNotInUse` (a new name
or folder is free), and a change of one entry in its own registry transaction. The registry file
itself is `registry.py`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

from pywsl.api.errors import WslError
from pywsl.api.session.registry import DistributionState, Registration, Registry, RegistryData

__all__ = ["Distro", "check_unique", "lookup", "update_registration"]

Distro = str | uuid.UUID | None


def lookup(data: RegistryData, distro: Distro, *, list_all: bool = False) -> Registration:
    """`OpenOrDefault`: a registration by name, GUID or the default."""
    if distro is None:
        data.fix_default()
        if data.default_distribution is None:
            raise WslError("WSL_E_DEFAULT_DISTRO_NOT_FOUND")
        return data.distributions[data.default_distribution]
    if isinstance(distro, uuid.UUID):
        found = data.distributions.get(distro)
        if found is None:
            raise WslError("WSL_E_DISTRO_NOT_FOUND")
        return found
    if not isinstance(distro, str):
        raise WslError(
            "E_INVALIDARG", f"A distribution is a name, a UUID or None, not {type(distro).__name__}."
        )
    if not distro:
        raise WslError("E_INVALIDARG", "The distribution name is empty.")
    by_name = data.find(distro, list_all=list_all)
    if by_name is None:
        raise WslError("WSL_E_DISTRO_NOT_FOUND")
    return by_name


def check_unique(
    data: RegistryData, name: str | None, base_path: Path, exclude: uuid.UUID | None = None
) -> None:
    """`_ValidateDistributionNameAndPathNotInUse`: no other registration (but `exclude`) has the
    name (case-insensitive) or the folder (after resolving links)."""
    canonical = os.path.realpath(base_path)
    for other in data.distributions.values():
        if other.id == exclude:
            continue
        if name and other.name.casefold() == name.casefold():
            if other.state is DistributionState.INSTALLED:
                raise WslError(
                    "ERROR_ALREADY_EXISTS", "A distribution with the supplied name already exists."
                )
            raise WslError("E_ILLEGAL_STATE_CHANGE")
        if os.path.realpath(other.base_path) == canonical:
            raise WslError("ERROR_FILE_EXISTS", "The supplied install location is already in use.")


def update_registration(
    registry: Registry, distro_id: uuid.UUID, change: Callable[[Registration, RegistryData], None]
) -> Registration:
    """Apply `change` to one entry in a registry transaction; WSL_E_DISTRO_NOT_FOUND if it is gone."""
    with registry.transaction() as data:
        registration = data.distributions.get(distro_id)
        if registration is None:
            raise WslError("WSL_E_DISTRO_NOT_FOUND")
        change(registration, data)
        return registration
