"""The import's tar stream filter: device nodes out, every other byte through unchanged."""

from __future__ import annotations

import io
import os
import random
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from pywsl.guest.tar_device_filter import BLOCK, DeviceNodeFilter, skipped_devices_warning

LONG = "very-long-directory-name-" * 6


def _info(
    name: str, kind: bytes, *, size: int = 0, target: str = "", pax: dict[str, str] | None = None
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.linkname = target
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.devmajor, info.devminor = (1, 3) if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE) else (0, 0)
    info.mtime = 1_700_000_000
    info.pax_headers = dict(pax or {})
    return info


def _members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Every kind of member, devices among them (some with long names or extended headers)."""
    payloads = {size: os.urandom(size) for size in (0, 1, 511, 512, 513, 70_000)}
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info("./", tarfile.DIRTYPE), None),
        (_info("dev", tarfile.DIRTYPE), None),
        (_info("dev/null", tarfile.CHRTYPE), None),
        (_info("dev/sda", tarfile.BLKTYPE), None),
        (_info("dev/initctl", tarfile.FIFOTYPE), None),
        (_info("dev/console-link", tarfile.LNKTYPE, target="dev/null"), None),
        (_info("dev/link-of-link", tarfile.LNKTYPE, target="./dev/console-link"), None),
        (_info("dev/fd", tarfile.SYMTYPE, target="/proc/self/fd"), None),
        (_info(f"dev/{LONG}/", tarfile.DIRTYPE), None),
        (
            _info(
                f"dev/{LONG}/tty-with-a-long-name", tarfile.CHRTYPE, pax={"SCHILY.xattr.user.note": "device"}
            ),
            None,
        ),
        (_info(f"dev/{LONG}/pipe-with-a-long-name", tarfile.FIFOTYPE), None),
        (_info("etc", tarfile.DIRTYPE, pax={"SCHILY.xattr.user.tag": "kept"}), None),
    ]
    for size, payload in payloads.items():
        members.append((_info(f"etc/file-{size}", tarfile.REGTYPE, size=size), payload))
    members += [
        (_info("etc/hard", tarfile.LNKTYPE, target="etc/file-513"), None),
        (_info(f"etc/{LONG}-regular", tarfile.REGTYPE, size=3), b"abc"),
        (_info("etc/last-device", tarfile.BLKTYPE), None),
    ]
    return members


DROPPED = {
    "dev/null",
    "dev/sda",
    "dev/console-link",
    "dev/link-of-link",
    f"dev/{LONG}/tty-with-a-long-name",
    "etc/last-device",
}


def _archive(members: Iterable[tuple[tarfile.TarInfo, bytes | None]], tar_format: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as handle:
        for info, data in members:
            handle.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _without(data: bytes, dropped: set[str]) -> bytes:
    """``data`` with the byte ranges of the ``dropped`` members (headers and extended headers) cut."""
    kept = bytearray()
    position = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as handle:
        for info in handle.getmembers():
            if info.name.rstrip("/") in dropped:
                kept += data[position : info.offset]
                position = info.offset_data
    kept += data[position:]
    return bytes(kept)


def _chunks(data: bytes, sizes: Iterable[int]) -> list[bytes]:
    chunks, position = [], 0
    for size in sizes:
        if position >= len(data):
            break
        chunks.append(data[position : position + size])
        position += size
    if position < len(data):
        chunks.append(data[position:])
    return chunks


def run_filter(chunks: Iterable[bytes]) -> tuple[bytes, DeviceNodeFilter]:
    nodes = DeviceNodeFilter()
    output = bytearray()
    for chunk in chunks:
        for piece in nodes.feed(chunk):
            output += piece
    for piece in nodes.finish():
        output += piece
    return bytes(output), nodes


def _splits(data: bytes) -> dict[str, list[bytes]]:
    generator = random.Random(7)
    return {
        "whole": [data],
        "blocks": _chunks(data, [BLOCK] * (len(data) // BLOCK)),
        "odd": _chunks(data, [511, 513, 1, 1023, 100] * len(data)),
        "random": _chunks(data, (generator.randint(1, 5000) for _ in range(len(data)))),
    }


@pytest.mark.parametrize(
    "tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT], ids=["gnu", "pax", "ustar"]
)
def test_devices_and_their_headers_are_cut_out_and_nothing_else(tar_format: int) -> None:
    members = _members()
    if tar_format == tarfile.USTAR_FORMAT:  # no long names, no extended headers
        members = [(info, data) for info, data in members if LONG not in info.name and not info.pax_headers]
    data = _archive(members, tar_format)
    dropped = {info.name.rstrip("/") for info, _ in members} & DROPPED
    expected = _without(data, dropped)
    for split, chunks in _splits(data).items():
        output, nodes = run_filter(chunks)
        assert output == expected, split
        assert nodes.skipped == len(dropped), split
        assert not nodes.filtering, "the end of the archive ends the filtering"
    payload = next(content for info, content in members if info.name == "etc/file-70000")
    with tarfile.open(fileobj=io.BytesIO(expected)) as handle:
        names = handle.getnames()
        assert "dev/initctl" in names and "etc/hard" in names
        extracted = handle.extractfile("etc/file-70000")
        assert extracted is not None and extracted.read() == payload


def _set_size_field(data: bytearray, offset: int, size: int) -> None:
    """Rewrite a header's size field (and its checksum)."""
    data[offset + 124 : offset + 136] = b"%011o\0" % size
    data[offset + 148 : offset + 156] = b" " * 8
    data[offset + 148 : offset + 156] = b"%06o\0 " % sum(data[offset : offset + BLOCK])


def test_the_pax_size_counts_not_the_header_s() -> None:
    payload = os.urandom(3000)
    info = _info("etc/big", tarfile.REGTYPE, size=len(payload), pax={"size": str(len(payload))})
    data = bytearray(
        _archive(
            [
                (info, payload),
                (_info("dev/zero", tarfile.CHRTYPE), None),
                (_info("etc/after", tarfile.REGTYPE, size=1), b"z"),
            ],
            tarfile.PAX_FORMAT,
        )
    )
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as handle:
        header = handle.getmember("etc/big").offset_data - BLOCK
    _set_size_field(data, header, 0)  # as for a file over 8 GiB: only the pax record holds the size
    output, nodes = run_filter([bytes(data)])
    assert nodes.skipped == 1
    assert output == _without(bytes(data), {"dev/zero"})


def test_a_broken_header_ends_the_filtering_and_passes_the_rest() -> None:
    members = [
        (_info("dev/a", tarfile.CHRTYPE), None),
        (_info("etc/x", tarfile.REGTYPE, size=4), b"data"),
        (_info("dev/b", tarfile.CHRTYPE), None),
    ]
    data = bytearray(_archive(members, tarfile.GNU_FORMAT))
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as handle:
        broken = handle.getmember("etc/x").offset
    data[broken + 148] ^= 0x01  # a wrong checksum: tar itself complains about it
    output, nodes = run_filter(_splits(bytes(data))["odd"])
    assert nodes.skipped == 1 and not nodes.filtering
    assert output == bytes(data[BLOCK:]), "dev/b stays: after a broken header everything passes"


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.SYMTYPE, b"V"])
def test_what_is_not_sure_is_not_filtered(kind: bytes) -> None:
    """A device or link that claims data, or an unknown member type: the rest passes unchanged."""
    info = _info("odd", kind, size=BLOCK)
    data = bytearray(
        _archive(
            [
                (_info("dev/a", tarfile.BLKTYPE), None),
                (_info("odd", tarfile.REGTYPE, size=BLOCK), bytes(BLOCK)),
                (_info("dev/b", tarfile.BLKTYPE), None),
            ],
            tarfile.USTAR_FORMAT,
        )
    )
    data[BLOCK + 156] = kind[0]
    _set_size_field(data, BLOCK, info.size)
    output, nodes = run_filter([bytes(data)])
    assert (nodes.skipped, output) == (1, bytes(data[BLOCK:]))


def test_a_cut_off_stream_is_handed_on_as_it_is() -> None:
    data = _archive(
        [(_info("etc/x", tarfile.REGTYPE, size=4), b"data"), (_info(f"dev/{LONG}", tarfile.CHRTYPE), None)],
        tarfile.GNU_FORMAT,
    )
    for end in (BLOCK + 100, 2 * BLOCK + 700, 3 * BLOCK + 10):  # in a header, in a long name
        output, nodes = run_filter([data[:end]])
        assert output == data[:end] and nodes.skipped == 0


def test_the_warning_names_how_many() -> None:
    assert skipped_devices_warning(1).startswith("Skipped 1 device node (")
    assert skipped_devices_warning(12).startswith("Skipped 12 device nodes (")


@pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes needs root")
def test_gnu_tar_archives(tmp_path: Path) -> None:
    """GNU tar's own output (old GNU sparse headers with extension blocks, pax xattrs, long names):
    the same listing without the devices, and the sparse file extracts as it was."""
    tree = tmp_path / "tree"
    (tree / "dev" / LONG).mkdir(parents=True)
    os.mknod(tree / "dev" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(tree / "dev" / LONG / "loop0", 0o660 | 0o060000, os.makedev(7, 0))
    os.mkfifo(tree / "dev" / "fifo")
    os.link(tree / "dev" / "null", tree / "dev" / "null-again")
    sparse = tree / "sparse"
    with open(sparse, "wb") as handle:
        for index in range(40):  # more holes than a GNU header and its first extension block hold
            handle.seek(index * (1 << 18))
            handle.write(b"piece %d" % index)
        handle.truncate(41 << 18)
    os.setxattr(sparse, "user.kept", b"yes")
    for tar_format in ("gnu", "posix"):
        archive = tmp_path / f"{tar_format}.tar"
        xattrs = ["--xattrs"] if tar_format == "posix" else []  # pax records: posix only
        subprocess.run(
            [
                "tar",
                "-c",
                "--sparse",
                *xattrs,
                f"--format={tar_format}",
                "-f",
                str(archive),
                "-C",
                str(tree),
                "./sparse",
                "./dev",
            ],
            check=True,
        )  # the devices after it
        data = archive.read_bytes()
        output, nodes = run_filter(_splits(data)["random"])
        assert nodes.skipped == 3, tar_format
        filtered = tmp_path / f"{tar_format}-filtered.tar"
        filtered.write_bytes(output)
        listing = subprocess.run(["tar", "-tf", str(filtered)], check=True, capture_output=True, text=True)
        original = subprocess.run(["tar", "-tf", str(archive)], check=True, capture_output=True, text=True)
        devices = {"./dev/null", f"./dev/{LONG}/loop0", "./dev/null-again"}
        assert listing.stdout.splitlines() == [
            line for line in original.stdout.splitlines() if line not in devices
        ]
        copy = tmp_path / f"{tar_format}-copy"
        copy.mkdir()
        subprocess.run(
            ["tar", "-x", "--xattrs", "--xattrs-include=*", "-f", str(filtered), "-C", str(copy)], check=True
        )
        assert (copy / "sparse").read_bytes() == sparse.read_bytes()
        if xattrs:
            assert os.getxattr(copy / "sparse", "user.kept") == b"yes"
        assert (copy / "dev" / "fifo").is_fifo()


def test_a_global_header_stays_when_the_device_after_it_goes() -> None:
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "for every member"}
    ) as handle:
        handle.addfile(_info("dev/null", tarfile.CHRTYPE, pax={"SCHILY.xattr.user.a": "b"}))
        handle.addfile(_info("etc/x", tarfile.REGTYPE, size=2), io.BytesIO(b"xy"))
    data = buffer.getvalue()
    output, nodes = run_filter(_splits(data)["odd"])
    assert nodes.skipped == 1 and output == _without(data, {"dev/null"})
    assert output[156] == ord("g")
    with tarfile.open(fileobj=io.BytesIO(output)) as handle:
        assert handle.pax_headers == {"comment": "for every member"} and handle.getnames() == ["etc/x"]


def test_oversized_extended_headers_are_not_held_back() -> None:
    huge = _info("dev/null", tarfile.CHRTYPE, pax={"SCHILY.xattr.user.big": "v" * (17 << 20)})
    data = _archive([(_info("dev/a", tarfile.CHRTYPE), None), (huge, None)], tarfile.PAX_FORMAT)
    output, nodes = run_filter(_chunks(data, [1 << 20] * 40))
    assert nodes.skipped == 1 and output == _without(data, {"dev/a"})
