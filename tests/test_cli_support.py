"""Helpers for the command line tests: a mocked UserSession and a CliRunner around `pywsl`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from pytest_mock import MockerFixture

from pywsl.api.session.distribution_info import DistributionInfo
from pywsl.api.session.registry import DistributionState
from pywsl.api.session.user_session import UserSession
from pywsl.cli.main import build_command

DEBIAN_ID = uuid.UUID("6d3f4c1e-1111-4a2b-9c3d-000000000001")
ALPINE_ID = uuid.UUID("6d3f4c1e-2222-4a2b-9c3d-000000000002")
BUSY_ID = uuid.UUID("6d3f4c1e-3333-4a2b-9c3d-000000000003")


def info(
    distro_id: uuid.UUID,
    name: str,
    state: DistributionState = DistributionState.INSTALLED,
    *,
    default: bool = False,
    flavor: str = "",
    os_version: str = "",
) -> DistributionInfo:
    return DistributionInfo(
        id=distro_id,
        name=name,
        state=state,
        version=2,
        is_default=default,
        flavor=flavor,
        os_version=os_version,
        base_path=Path("/srv") / name,
        default_uid=0,
        run_oobe=False,
    )


def standard_distributions() -> list[DistributionInfo]:
    return [
        info(ALPINE_ID, "Alpine", DistributionState.RUNNING, flavor="alpine", os_version="3.20"),
        info(DEBIAN_ID, "Debian", default=True, flavor="debian", os_version="12"),
        info(BUSY_ID, "Busy", DistributionState.INSTALLING),
    ]


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


class Cli:
    """Runs `pywsl` in-process through click's CliRunner, with the session mocked."""

    def __init__(self, mocker: MockerFixture) -> None:
        self.session: Any = mocker.create_autospec(UserSession, instance=True)
        self.session.enumerate_distributions.return_value = standard_distributions()
        names = {"debian": DEBIAN_ID, "alpine": ALPINE_ID, "busy": BUSY_ID}

        def get_distribution_id(name: str, *, list_all: bool = False) -> uuid.UUID:
            from pywsl.api.errors import WslError

            found = names.get(name.casefold())
            if found is None or (found == BUSY_ID and not list_all):
                raise WslError("WSL_E_DISTRO_NOT_FOUND", context="Wsl/Service")
            return found

        self.session.get_distribution_id.side_effect = get_distribution_id
        self.process = mocker.MagicMock()
        self.process.wait.return_value = 0
        self.process.exit_status_lost = False
        self.session.create_lx_process.return_value = self.process
        self.open_session = mocker.patch("pywsl.cli.context.open_session", return_value=self.session)
        # Root's quick launch (no session) is declined: every launch goes to the mocked session.
        self.quick_launch = mocker.patch("pywsl.cli.context.quick_launch", return_value=None)
        self.prestart_vm = mocker.patch("pywsl.cli.context.prestart_vm")  # no VM interpreter either

    def __call__(
        self, *args: str, input: str | bytes | None = None, env: dict[str, str] | None = None
    ) -> Outcome:
        runner = CliRunner()
        result = runner.invoke(build_command(), list(args), input=input, env=env, catch_exceptions=False)
        return Outcome(result.exit_code, result.stdout, result.stderr)

    def launched(self) -> tuple[Sequence[Any], dict[str, Any]]:
        """The positional and keyword arguments of the one create_lx_process call."""
        assert self.session.create_lx_process.call_count == 1
        call = self.session.create_lx_process.call_args
        return call.args, call.kwargs
