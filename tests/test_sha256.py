"""`pywsl.sha256` gives hashlib's SHA-256 without loading OpenSSL."""

from __future__ import annotations

import hashlib
import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest
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


@pytest.mark.parametrize("missing", [("_sha256",), ("_sha256", "_sha2")])
def test_other_interpreters_get_the_same_digest(missing: tuple[str, ...]) -> None:
    """Python 3.12 names its module `_sha2`; without a built-in one, hashlib's is used."""
    import pywsl.sha256 as module

    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in missing:
                patch.setitem(sys.modules, name, None)  # an import of it fails
            if "_sha2" not in missing:
                fake = types.ModuleType("_sha2")
                fake.sha256 = hashlib.sha256  # type: ignore[attr-defined]
                patch.setitem(sys.modules, "_sha2", fake)
            reloaded = importlib.reload(module)
            assert reloaded.sha256(b"pywsl").hexdigest() == hashlib.sha256(b"pywsl").hexdigest()
            assert reloaded.sha256 is hashlib.sha256
    finally:
        importlib.reload(module)
