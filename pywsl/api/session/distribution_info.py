"""What `ILxssUserSession` reports about a distribution: `DistributionInfo`, `DistributionConfiguration`.

`EnumerateDistributions` returns one `LXSS_ENUMERATE_INFO` per registration, completed here with
the registry values a caller asks for next (flavor, version, folder, default uid);
`GetDistributionConfiguration` returns the values of one registration. Both are plain frozen
dataclasses built from a `Registration`, so that the service can send them as JSON and its client
rebuild them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pywsl.api.session.registry import DistributionState, Registration

__all__ = ["DistributionConfiguration", "DistributionInfo", "distribution_configuration", "distribution_info"]


@dataclass(frozen=True)
class DistributionInfo:
    """One row of `EnumerateDistributions` (`LXSS_ENUMERATE_INFO` plus the registry values)."""

    id: uuid.UUID
    name: str
    state: DistributionState
    version: int  # WSL version (2)
    is_default: bool
    flavor: str
    os_version: str
    base_path: Path
    default_uid: int
    run_oobe: bool


@dataclass(frozen=True)
class DistributionConfiguration:
    """What `GetDistributionConfiguration` returns."""

    id: uuid.UUID
    name: str
    version: int  # filesystem version (2), not the WSL version
    default_uid: int
    flags: int
    default_environment: list[str] = field(default_factory=list)
    base_path: Path = Path("/")


def distribution_info(
    registration: Registration, state: DistributionState, default: uuid.UUID | None
) -> DistributionInfo:
    """The enumeration row of `registration` in the live `state`; `default` is the default's GUID."""
    return DistributionInfo(
        id=registration.id,
        name=registration.name,
        state=state,
        version=registration.wsl_version,
        is_default=registration.id == default,
        flavor=registration.flavor,
        os_version=registration.os_version,
        base_path=registration.base_path,
        default_uid=registration.default_uid,
        run_oobe=registration.run_oobe,
    )


def distribution_configuration(registration: Registration) -> DistributionConfiguration:
    """The `GetDistributionConfiguration` result of `registration` (Version = filesystem version)."""
    return DistributionConfiguration(
        id=registration.id,
        name=registration.name,
        version=registration.version,
        default_uid=registration.default_uid,
        flags=registration.flags,
        default_environment=list(registration.default_environment),
        base_path=registration.base_path,
    )
