"""The network files init writes into a distribution: ``/etc/hostname``, ``/etc/hosts``, ``/etc/resolv.conf``.

WSL's init sets the host name (wsl.conf ``[network] hostname`` wins over the one the service sends,
then it is cleaned up), the domain name (the service's, ``localdomain`` when the machine has none)
and, unless wsl.conf turns it off, generates ``/etc/hosts`` and ``/etc/resolv.conf`` with a header
that says how to stop it. With mirrored networking the host's
DNS settings are the distribution's, so ``resolv.conf`` copies the host's ``nameserver``,
``search``, ``domain`` and ``options`` lines.
"""

from __future__ import annotations

from pywsl.wire.constants import LX_INIT_AUTO_GENERATED_FILE_HEADER, LX_INIT_RESOLVCONF_PREFIX

HOST_NAME_MAX = 64
DEFAULT_HOSTNAME = "localhost"
# The domain WSL's service sends when the machine has no DNS domain.
DEFAULT_DOMAIN = "localdomain"
HOSTS_PREFIX = "# [network]\n# generateHosts = false\n"
MAX_RESOLV_CONF_BYTES = 64 * 1024
_RESOLV_KEYWORDS = ("nameserver", "search", "domain", "options", "sortlist")
_IPV6_HOSTS = (
    "# The following lines are desirable for IPv6 capable hosts\n"
    "::1     ip6-localhost ip6-loopback\n"
    "fe00::0 ip6-localnet\n"
    "ff00::0 ip6-mcastprefix\n"
    "ff02::1 ip6-allnodes\n"
    "ff02::2 ip6-allrouters\n"
)


def clean_hostname(name: str) -> str:
    """A valid Linux host name made from ``name``, as WSL cleans it (``CleanHostname``).

    ASCII letters and digits are kept; a ``.`` only once, never first and never after ``-``; a
    ``-`` never first and never after ``-`` or ``.``; everything else is dropped. The result is
    cut at 64 characters, loses trailing dots and dashes, and an empty one becomes ``localhost``.
    """
    result = ""
    dot = False
    for char in name:
        if char == ".":
            if dot or not result or result[-1] == "-":
                continue
            dot = True
            result += char
        elif char == "-":
            if not result or result[-1] in "-.":
                continue
            result += char
        elif char.isascii() and char.isalnum():
            result += char
    result = result[:HOST_NAME_MAX].rstrip("-.")
    return result or DEFAULT_HOSTNAME


def hosts_file(hostname: str, domain: str, extra_entries: str = "") -> str:
    """The generated ``/etc/hosts``, laid out as WSL's init writes it.

    ``127.0.1.1`` names ``<hostname>.<domain>`` then ``<hostname>`` (with an empty domain the
    first is ``<hostname>.``, as in WSL); ``extra_entries`` (WSL: the Windows hosts file, one
    tab-separated entry a line) follows as given, then a newline and the IPv6 lines.
    """
    return (
        LX_INIT_AUTO_GENERATED_FILE_HEADER
        + HOSTS_PREFIX
        + f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}.{domain}\t{hostname}\n"
        + extra_entries
        + "\n"
        + _IPV6_HOSTS
    )


def resolv_conf_file(host_resolv_conf: str) -> str:
    """The generated ``/etc/resolv.conf``: the header, then the host's resolver lines."""
    lines = []
    for line in host_resolv_conf.splitlines():
        words = line.split()
        if words and words[0] in _RESOLV_KEYWORDS:
            lines.append(" ".join(words))
    body = "".join(f"{line}\n" for line in lines)
    return LX_INIT_AUTO_GENERATED_FILE_HEADER + LX_INIT_RESOLVCONF_PREFIX + body
