"""`pywsl.sha256` gives hashlib's SHA-256 without loading OpenSSL."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import pywsl
from pywsl.sha256 import sha256

REPO = Path(pywsl.__file__).resolve().parent.parent


@given(st.binary(max_size=4096), st.binary(max_size=300))
def test_the_digests_are_hashlibs(first: bytes, second: bytes) -> None:
    digest = sha256(first)
    digest.update(second)
    assert digest.hexdigest() == hashlib.sha256(first + second).hexdigest()
    assert sha256(first).digest() == hashlib.sha256(first).digest()


def test_it_does_not_load_openssl() -> None:
    probe = "import sys; import pywsl.sha256; print('_hashlib' in sys.modules, 'hashlib' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env={"PYTHONPATH": str(REPO)},
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert done.stdout == b"False False\n"
