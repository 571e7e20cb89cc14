"""The first-run setup ("OOBE") that pywsl's built-in distributions carry, as WSL's images do.

WSL's Debian and Ubuntu images name a script in `/etc/wsl-distribution.conf` (`[oobe] command`)
that asks for a UNIX user name and password on the first interactive launch, creates that user
(uid 1000, in the administrative groups the image has, `sudo` among them) and lets `[oobe]
defaultUid = 1000` make it the default user. The built images get the same: `DISTRIBUTION_CONF`
and `SETUP_SCRIPT`, a POSIX shell script that needs only the `passwd` package (`useradd`,
`usermod`, `userdel`, `chpasswd`), present in every minbase root filesystem.

The script exits 0 when the user exists (made now, or already there: it never asks twice) and 1
otherwise, removing the user it created when the setup does not finish (end of input, interrupt,
too many refused passwords); pywsl then keeps the setup pending for the next launch.
"""

from __future__ import annotations

__all__ = ["DEFAULT_UID", "SETUP_SCRIPT", "SETUP_SCRIPT_PATH", "distribution_conf"]

DEFAULT_UID = 1000
SETUP_SCRIPT_PATH = "/usr/lib/wsl/first-run-setup"


def distribution_conf(default_name: str) -> str:
    """`/etc/wsl-distribution.conf` of a built image."""
    return (
        "# Read by pywsl (and WSL) when the distribution is installed and on its first launch.\n"
        "[oobe]\n"
        f"command = {SETUP_SCRIPT_PATH}\n"
        f"defaultUid = {DEFAULT_UID}\n"
        f"defaultName = {default_name}\n"
    )


SETUP_SCRIPT = f"""#!/bin/sh
# First-run setup: create the default UNIX user of this distribution (uid {DEFAULT_UID}).
# Run as root on the first interactive launch ([oobe] command in /etc/wsl-distribution.conf).
# Exit status 0: the user exists and becomes the default one. Anything else: nothing is left
# behind and the setup runs again at the next launch.
set -u
uid={DEFAULT_UID}
admin_groups="adm cdrom sudo dip plugdev users"
max_attempts=5

existing=$(getent passwd "$uid" | cut -d: -f1)
if [ -n "$existing" ]; then
    echo "The default user is $existing (uid $uid)."
    exit 0
fi
if [ ! -t 0 ]; then
    echo "Creating the default user needs a terminal." >&2
    exit 1
fi

created=""
give_up() {{
    stty echo 2>/dev/null
    if [ -n "$created" ]; then
        userdel --remove "$created" >/dev/null 2>&1
    fi
    echo
    echo "The user was not created; this setup runs again at the next launch." >&2
    exit 1
}}
trap give_up INT TERM HUP

echo "Please create a default UNIX user account. The user name does not need to match the host's."
while :; do
    printf 'Enter new UNIX username: '
    IFS= read -r name || give_up
    if [ -z "$name" ] || [ "${{#name}}" -gt 32 ]; then
        echo "A user name has 1 to 32 characters."
        continue
    fi
    case $name in
        [!a-z_]*) echo "A user name starts with a lower-case letter or '_'."; continue ;;
        *[!a-z0-9_-]*) echo "A user name has only lower-case letters, digits, '-' and '_'."; continue ;;
    esac
    if getent passwd "$name" >/dev/null || getent group "$name" >/dev/null; then
        echo "$name already exists; choose another name."
        continue
    fi
    break
done

shell=/bin/sh
if [ -x /bin/bash ]; then
    shell=/bin/bash
fi
useradd --uid "$uid" --user-group --create-home --shell "$shell" "$name" || give_up
created=$name
for group in $admin_groups; do
    if getent group "$group" >/dev/null; then
        usermod --append --groups "$group" "$name" || give_up
    fi
done

attempt=0
while :; do
    attempt=$((attempt + 1))
    stty -echo
    printf 'New password: '
    IFS= read -r password || give_up
    printf '\\nRetype new password: '
    IFS= read -r again || give_up
    stty echo
    echo
    if [ -z "$password" ]; then
        echo "The password must not be empty."
    elif [ "$password" != "$again" ]; then
        echo "Sorry, passwords do not match."
    elif printf '%s:%s\\n' "$name" "$password" | chpasswd; then
        break
    fi
    if [ "$attempt" -ge "$max_attempts" ]; then
        give_up
    fi
done
echo "Created $name, the default user of this distribution."
"""
