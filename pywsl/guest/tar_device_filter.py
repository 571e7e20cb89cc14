"""Device nodes left out of a tar stream on its way to an import's tar.

A root filesystem archive often holds character and block devices (``./dev`` of a ``debootstrap``
tree). The import worker's tar runs in the VM's user namespace, where ``mknod`` of a device is
refused, and ``/dev`` is a fresh tmpfs whenever a distribution runs: so `DeviceNodeFilter` drops
those members before tar sees them and counts them (``skipped``) for one warning. FIFOs, and
everything else, pass.

The filter reads each member's 512-byte header and hands everything else on unchanged, as slices
of what it was given. A device's own extended headers (pax ``x``, GNU ``L`` and ``K``) go with it,
and so does a hard link to a device dropped before (tar could not make it either). The layout it
follows is the one GNU tar's extraction reads: data blocks after regular files (``0``, ``7``,
NUL), GNU sparse files and dumpdirs, of the pax ``size`` when there is one; none after links,
devices, FIFOs and directories. Whatever it cannot be sure of (a bad checksum, an unknown member
type, a link or device that claims data, an extended header over `MAX_EXTENDED_HEADERS` bytes)
ends the filtering: that header and the rest pass unchanged and tar judges them as it always did.
The end of the archive (a zero block) ends it too.
"""

from __future__ import annotations

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from dataclasses import dataclass, field
else:
    from pywsl.records import dataclass, field


__all__ = ["BLOCK", "DeviceNodeFilter", "Piece", "skipped_devices_warning"]

BLOCK = 512
# Extended headers held back for the member they describe, at most (bytes).
MAX_EXTENDED_HEADERS = 16 << 20
# The names of dropped devices kept for the hard links to them, at most (bytes).
MAX_REMEMBERED_NAMES = 16 << 20
_ZERO_BLOCK = bytes(BLOCK)
_DEVICES = frozenset(b"34")
_HARD_LINK = ord("1")
_NO_DATA = frozenset(b"123456")
_REGULAR = frozenset(b"07\0")
_WITH_DATA = _REGULAR | frozenset(b"SD")
_EXTENDED = frozenset(b"xXLK")  # describe the next member only
_GLOBAL = ord("g")
_GNU_SPARSE = ord("S")
_USTAR_MAGIC = b"ustar\x00"

Piece = bytes | memoryview


def skipped_devices_warning(skipped: int) -> str:
    """The warning for the user when ``skipped`` device nodes were left out of an import."""
    nodes = "device node" if skipped == 1 else "device nodes"
    return (
        f"Skipped {skipped} {nodes} (character or block devices) in the archive: a distribution "
        "cannot hold them, its /dev is a fresh tmpfs each time it runs."
    )


def _padded(size: int) -> int:
    return (size + BLOCK - 1) & ~(BLOCK - 1)


def _number(field_bytes: bytes | memoryview) -> int | None:
    """A header's numeric field: octal (space or NUL padded) or GNU base-256; None if neither."""
    raw = bytes(field_bytes)
    if raw and raw[0] & 0x80:
        if raw[0] == 0xFF:
            return None  # negative
        return int.from_bytes(bytes([raw[0] & 0x7F]) + raw[1:], "big")
    text = raw.strip(b" \0")
    if not text:
        return 0
    if any(digit not in b"01234567" for digit in text):
        return None
    return int(text, 8)


def _checksum_ok(block: bytes | memoryview) -> bool:
    stored = _number(block[148:156])
    if stored is None:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 8 * ord(" ")
    if stored == unsigned:
        return True
    high = sum(1 for byte in block[:148] if byte & 0x80) + sum(1 for byte in block[156:] if byte & 0x80)
    return stored == unsigned - 256 * high


def _c_string(raw: bytes | memoryview) -> bytes:
    data = bytes(raw)
    end = data.find(b"\0")
    return data if end < 0 else data[:end]


def _member_size(extended: dict[bytes, bytes], header_size: int) -> int | None:
    """A member's data size: a pax ``size`` record overrides the header's; None when malformed."""
    if b"size" not in extended:
        return header_size
    value = extended[b"size"]
    return int(value) if value.isdigit() else None


def _member_name(block: bytes | memoryview, extended: dict[bytes, bytes]) -> bytes:
    """A member's path: an extended ``path``, else the header's name after its ustar prefix."""
    name = extended.get(b"path", b"")
    if name:
        return name
    name = _c_string(block[0:100])
    prefix = _c_string(block[345:500]) if bytes(block[257:263]) == _USTAR_MAGIC else b""
    return prefix + b"/" + name if prefix else name


def _normal(name: bytes) -> bytes:
    """A member name as tar resolves it below the target: no leading "/", no "." parts."""
    return b"/".join(part for part in name.split(b"/") if part not in (b"", b"."))


def _pax_records(data: bytes) -> dict[bytes, bytes] | None:
    """The ``length key=value\\n`` records of a pax extended header; None when malformed."""
    records: dict[bytes, bytes] = {}
    position = 0
    while position < len(data):
        space = data.find(b" ", position, position + 24)
        if space < 0:
            return None if data[position:].strip(b"\0") else records
        length_text = data[position:space]
        if not length_text.isdigit():
            return None
        end = position + int(length_text)
        if end <= space + 1 or end > len(data) or data[end - 1] != ord("\n"):
            return None
        key, equals, value = data[space + 1 : end - 1].partition(b"=")
        if not equals:
            return None
        records[key] = value
        position = end
    return records


@dataclass
class _Extended:
    """An extended header (``x``, ``X``, ``L``, ``K`` or ``g``) and its data, held back."""

    kind: int
    header: bytes
    size: int  # its data's size, without the padding
    data: bytearray = field(default_factory=bytearray)  # with the padding, once complete

    def raw(self) -> bytes:
        return self.header + self.data

    def content(self) -> bytes:
        return bytes(self.data[: self.size])


class _Output:
    """What one `DeviceNodeFilter.feed` hands on: slices of its input, joined when adjacent."""

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.pieces: list[Piece] = []
        self._start = self._end = -1

    def take(self, start: int, end: int) -> None:
        if start == end:
            return
        if start == self._end:
            self._end = end
            return
        self._flush()
        self._start, self._end = start, end

    def add(self, data: bytes) -> None:
        if data:
            self._flush()
            self.pieces.append(data)

    def _flush(self) -> None:
        if self._start >= 0:
            self.pieces.append(self.view[self._start : self._end])
        self._start = self._end = -1

    def done(self) -> list[Piece]:
        self._flush()
        return self.pieces


class DeviceNodeFilter:
    """A tar stream without its device nodes: `feed` it the stream in order, `finish` at its end."""

    def __init__(self) -> None:
        self.skipped = 0  # device nodes (and hard links to them) left out
        self.filtering = True  # False: the end of the archive, or something unsure; the rest passes
        self._header = bytearray()  # a header block split across feeds
        self._copy = 0  # bytes of the current member still to pass on
        self._sparse_blocks = False  # GNU sparse extension blocks follow
        self._sparse_data = 0  # then this many bytes of data
        self._collecting: _Extended | None = None  # an extended header whose data is still coming
        self._pending: list[_Extended] = []  # extended headers waiting for their member
        self._pending_bytes = 0
        self._dropped: set[bytes] = set()  # normalised names, for the hard links to them
        self._remembered = 0

    def feed(self, data: bytes) -> list[Piece]:
        """The part of the stream to hand on for the next ``data`` (slices of it, or held-back bytes)."""
        view = memoryview(data)
        output = _Output(view)
        position, length = 0, len(view)
        while position < length:
            if not self.filtering:
                output.take(position, length)
                break
            if self._copy:
                step = min(self._copy, length - position)
                output.take(position, position + step)
                position += step
                self._copy -= step
                continue
            if self._collecting is not None:
                position = self._collect(view, position)
                continue
            if not self._header and length - position >= BLOCK:
                block: bytes | memoryview = view[position : position + BLOCK]
                if self._header_block(block, output):
                    output.take(position, position + BLOCK)
                position += BLOCK
                continue
            step = min(BLOCK - len(self._header), length - position)
            self._header += view[position : position + step]
            position += step
            if len(self._header) == BLOCK:
                block = bytes(self._header)
                self._header.clear()
                if self._header_block(block, output):
                    output.add(block)
        return output.done()

    def finish(self) -> list[Piece]:
        """The end of the stream: whatever was held back, unchanged (tar judges a cut-off archive)."""
        held = [entry.raw() for entry in self._pending]
        if self._collecting is not None:
            held.append(self._collecting.raw())
        held.append(bytes(self._header))
        self._pending, self._collecting, self._header = [], None, bytearray()
        self.filtering = False
        return [piece for piece in held if piece]

    # -- the parts of a member ------------------------------------------------------------------

    def _collect(self, view: memoryview, position: int) -> int:
        entry = self._collecting
        assert entry is not None
        step = min(_padded(entry.size) - len(entry.data), len(view) - position)
        entry.data += view[position : position + step]
        if len(entry.data) == _padded(entry.size):
            self._collecting = None
            self._pending.append(entry)
        return position + step

    def _header_block(self, block: bytes | memoryview, output: _Output) -> bool:
        """Look at one header block; whether it is handed on right after what came before."""
        if self._sparse_blocks:
            self._sparse_blocks = bool(block[504])
            if not self._sparse_blocks:
                self._copy = self._sparse_data
            return True
        if block == _ZERO_BLOCK or not _checksum_ok(block):
            return self._stop(output)
        kind = block[156]
        size = _number(block[124:136])
        if size is None:
            return self._stop(output)
        if kind in _EXTENDED or kind == _GLOBAL:
            return self._hold(kind, bytes(block), size, output)
        return self._member(kind, block, size, output)

    def _hold(self, kind: int, header: bytes, size: int, output: _Output) -> bool:
        self._pending_bytes += BLOCK + _padded(size)
        if self._pending_bytes > MAX_EXTENDED_HEADERS:
            self._stop(output)
            output.add(header)
            return False
        entry = _Extended(kind, header, size)
        if size:
            self._collecting = entry
        else:
            self._pending.append(entry)
        return False

    def _member(self, kind: int, block: bytes | memoryview, header_size: int, output: _Output) -> bool:
        extended = self._extended_values()
        size = None if extended is None else _member_size(extended, header_size)
        if extended is None or size is None:
            return self._stop(output)
        name = _member_name(block, extended)
        if kind in _NO_DATA:
            return self._member_without_data(kind, block, extended, name, size, output)
        if kind in _WITH_DATA:
            return self._member_with_data(kind, block, name, size, output)
        return self._stop(output)

    def _member_without_data(
        self,
        kind: int,
        block: bytes | memoryview,
        extended: dict[bytes, bytes],
        name: bytes,
        size: int,
        output: _Output,
    ) -> bool:
        """A link, device, directory or FIFO: a device node (or a hard link to one left out) is
        dropped, the rest goes on."""
        if size:
            return self._stop(output)  # a link or device that claims data: not ours to judge
        if kind in _DEVICES or (kind == _HARD_LINK and self._links_to_dropped(block, extended)):
            return self._drop(name, output)
        self._release(output)
        return True

    def _member_with_data(
        self, kind: int, block: bytes | memoryview, name: bytes, size: int, output: _Output
    ) -> bool:
        """A regular, contiguous, sparse or directory-dump member: its data blocks go on after it."""
        if kind in _REGULAR and name.endswith(b"/") and size:
            return self._stop(output)  # a directory by its name, claiming data
        if kind == _GNU_SPARSE and block[482]:
            self._sparse_blocks = True
            self._sparse_data = _padded(size)
        else:
            self._copy = _padded(size)
        self._release(output)
        return True

    def _extended_values(self) -> dict[bytes, bytes] | None:
        """What the held-back extended headers say about the member after them (pax records,
        GNU long names as ``path`` and ``linkpath``); None when a pax header is malformed or a
        global one changes the layout."""
        values: dict[bytes, bytes] = {}
        for entry in self._pending:
            if entry.kind in b"LK":
                values[b"path" if entry.kind == ord("L") else b"linkpath"] = _c_string(entry.content())
                continue
            records = _pax_records(entry.content())
            if records is None or (entry.kind == _GLOBAL and b"size" in records):
                return None
            if entry.kind != _GLOBAL:
                values.update(records)
        return values

    def _links_to_dropped(self, block: bytes | memoryview, extended: dict[bytes, bytes]) -> bool:
        target = extended.get(b"linkpath") or _c_string(block[157:257])
        return _normal(target) in self._dropped

    def _drop(self, name: bytes, output: _Output) -> bool:
        """Leave the member out, with its extended headers (global ones go on)."""
        self.skipped += 1
        normal = _normal(name)
        if self._remembered + len(normal) <= MAX_REMEMBERED_NAMES:
            self._dropped.add(normal)
            self._remembered += len(normal)
        self._pending = [entry for entry in self._pending if entry.kind == _GLOBAL]
        self._release(output)
        return False

    def _release(self, output: _Output) -> None:
        for entry in self._pending:
            output.add(entry.raw())
        self._pending, self._pending_bytes = [], 0

    def _stop(self, output: _Output) -> bool:
        """Filter no more: what was held back goes on first, then this block and the rest."""
        self._release(output)
        self.filtering = False
        return True
