"""The network files init writes into a distribution: ``/etc/hostname``, ``/etc/hosts``, ``/etc/resolv.conf``.

WSL's init sets the host name (wsl.conf ``[network] hostname`` wins over the one the service sends,
then it is cleaned up) and, unless wsl.conf turns it off, generates ``/etc/hosts`` and
``/etc/resolv.conf`` with a header that says how to stop it. With mirrored networking the host's
DNS settings are the distribution's, so ``resolv.conf`` copies the host's ``nameserver``,
``search``, ``domain`` and ``options`` lines.
"""

from __future__ import annotations

from pywsl.wire.constants import LX_INIT_AUTO_GENERATED_FILE_HEADER, LX_INIT_RESOLVCONF_PREFIX

HOST_NAME_MAX = 64
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
    """A valid host name from ``name``: letters, digits, ``-`` and ``.``; at most 64 characters.

    Other characters are dropped, as are leading and trailing dashes and dots; an empty result
    becomes ``localhost``.
    """
    kept = "".join(char for char in name if char.isascii() and (char.isalnum() or char in "-."))
    kept = kept[:HOST_NAME_MAX].strip("-.")
    return kept or "localhost"


def hosts_file(hostname: str, domain: str = "", extra_entries: str = "") -> str:
    """The generated ``/etc/hosts``."""
    qualified = f"{hostname}.{domain}\t{hostname}" if domain else hostname
    text = LX_INIT_AUTO_GENERATED_FILE_HEADER + HOSTS_PREFIX
    text += f"127.0.0.1\tlocalhost\n127.0.1.1\t{qualified}\n"
    if extra_entries.strip():
        text += "\n" + extra_entries.rstrip("\n") + "\n"
    return text + "\n" + _IPV6_HOSTS


def resolv_conf_file(host_resolv_conf: str) -> str:
    """The generated ``/etc/resolv.conf``: the header, then the host's resolver lines."""
    lines = []
    for line in host_resolv_conf.splitlines():
        words = line.split()
        if words and words[0] in _RESOLV_KEYWORDS:
            lines.append(" ".join(words))
    body = "".join(f"{line}\n" for line in lines)
    return LX_INIT_AUTO_GENERATED_FILE_HEADER + LX_INIT_RESOLVCONF_PREFIX + body
