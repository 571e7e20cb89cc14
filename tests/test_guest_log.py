"""`pywsl.guest.guest_log`: the guest's loggers write `logging.basicConfig`'s lines without `logging`."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Iterator

import pytest

from pywsl.guest import guest_log

STAMPED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\d+) (\S+) ([A-Z]+): (.*)")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """This process's records written to a string, as the VM's processes write them."""
    text = io.StringIO()
    guest_log.configure(guest_log.INFO, text)
    try:
        yield text
    finally:
        guest_log._target = None


def test_unconfigured_records_go_to_logging(caplog: pytest.LogCaptureFixture) -> None:
    log = guest_log.getLogger("pywsl.test-guest")
    assert guest_log.getLogger("pywsl.test-guest") is log
    with caplog.at_level(logging.DEBUG, logger="pywsl.test-guest"):
        log.debug("d %d", 1)
        log.warning("w %s", "x")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed %s", "here")
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert records == [
        ("pywsl.test-guest", logging.DEBUG, "d 1"),
        ("pywsl.test-guest", logging.WARNING, "w x"),
        ("pywsl.test-guest", logging.ERROR, "failed here"),
    ]
    assert caplog.records[-1].exc_info is not None and caplog.records[-1].exc_info[0] is ValueError


def test_a_configured_process_writes_basic_config_lines(stream: io.StringIO) -> None:
    log = guest_log.getLogger("pywsl.init")
    log.debug("not shown")
    log.info("started %s in %.1f s", "Box", 0.25)
    log.warning(OSError(2, "gone"))  # not a string: shown as logging shows it
    log.error("%s and %s", "one")  # arguments that do not fit: the record is still written
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    parsed = [STAMPED.fullmatch(line) for line in lines]
    assert all(parsed), lines
    assert [m.groups() for m in parsed if m] == [
        (str(os.getpid()), "pywsl.init", "INFO", "started Box in 0.2 s"),
        (str(os.getpid()), "pywsl.init", "WARNING", "[Errno 2] gone"),
        (str(os.getpid()), "pywsl.init", "ERROR", "%s and %s ('one',)"),
    ]
    # The same line logging.basicConfig's format gives, but for the time.
    record = logging.LogRecord(
        "pywsl.init", logging.INFO, __file__, 1, "started %s in %.1f s", ("Box", 0.25), None
    )
    formatted = logging.Formatter(guest_log.STAMPED_FORMAT).format(record)
    assert formatted.split(" ", 2)[2] == lines[0].split(" ", 2)[2]


def test_an_exception_shows_its_traceback(stream: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    log = guest_log.getLogger("pywsl.vm-monitor")

    def fail() -> None:
        raise RuntimeError("the VM did not start")

    for loaded in (True, False):
        if not loaded:  # inside a distribution nothing is imported: the frames are listed plainly
            monkeypatch.delitem(sys.modules, "traceback")
        try:
            fail()
        except RuntimeError:
            log.exception("mini_init failed")
    log.exception("no exception")  # outside a handler: the line alone
    text = stream.getvalue()
    first, second = text.split("mini_init failed\n")[1:]
    assert first.startswith("Traceback (most recent call last):\n") and "line " in first
    assert "    raise RuntimeError" in first  # traceback's source lines
    assert second.startswith("Traceback (most recent call last):\n")
    assert f'  File "{__file__}", line ' in second and ", in fail\n" in second
    assert (
        "RuntimeError: the VM did not start\n" in first and "RuntimeError: the VM did not start\n" in second
    )
    assert text.endswith("ERROR: no exception\n")


def test_unstamped_lines_and_levels(stream: io.StringIO) -> None:
    guest_log.configure(guest_log.WARNING, stream, stamped=False)
    log = guest_log.getLogger("pywsl.interop-host")
    log.info("dropped")
    log.warning("kept %d", 2)
    assert stream.getvalue() == "pywsl.interop-host WARNING: kept 2\n"
    assert repr(log) == "GuestLogger('pywsl.interop-host')"


def test_a_closed_stream_loses_the_record_quietly(stream: io.StringIO) -> None:
    stream.close()
    guest_log.getLogger("pywsl.init").error("lost")
