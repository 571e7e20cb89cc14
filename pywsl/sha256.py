"""SHA-256 from the interpreter's own implementation: `hashlib` loads OpenSSL (`_hashlib`), a few
milliseconds of a VM's start or a cold launch, for digests that only name things."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hashlib import sha256
else:
    try:
        from _sha256 import sha256  # built in (Python 3.11)
    except ImportError:
        try:
            from _sha2 import sha256  # built in (Python 3.12 on)
        except ImportError:
            from hashlib import sha256

__all__ = ["sha256"]
