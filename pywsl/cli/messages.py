"""The user-facing strings of the command line, worded as wsl.exe words them.

wsl.exe takes its texts from a localized resource table (`Message*` entries); the ones the
command line prints itself live here, with the program name changed to ``pywsl``. Errors raised by
the library carry their own text (`WslError.message`); only the client-side ones are here.
"""

from __future__ import annotations

PROGRAM = "pywsl"

# Success (Windows' text for ERROR_SUCCESS).
OPERATION_SUCCESSFUL = "The operation completed successfully."

# Command line errors.
INVALID_COMMAND_LINE = (
    "Invalid command line argument: {argument}\n"
    f"Please use '{PROGRAM} --help' to get a list of supported arguments."
)
MISSING_ARGUMENT = (
    "Command line argument {argument} requires a value.\n"
    f"Please use '{PROGRAM} --help' to get a list of supported arguments."
)
REQUIRED_PARAMETER_MISSING = "Argument {argument} is missing a required parameter."
DISTRO_ALREADY_SET = "The distribution name has already been set."
ARGUMENTS_NOT_VALID_TOGETHER = "Arguments {first} and {second} can't be specified at same time."
ARGUMENT_NOT_VALID_WITHOUT = "Argument {argument} requires the {required} argument."
INVALID_GUID = "Invalid GUID format: '{value}'"
INVALID_CWD = (
    "Invalid directory for --cd: '{value}'. Use a path inside the distribution, starting with / or ~."
)
INVALID_VALUE = "Invalid value for {option}: {detail}"
PASS_VHD_FLAG = "This looks like a VHD file. Use --vhd to import a VHD instead of a tar."
MANAGE_ONE_ACTION = "--manage takes exactly one of --move, --set-default-user, --set-sparse and --resize."
UNEXPECTED_UID = "Unexpected output of 'id -u': {output!r}"

# Listing.
REGISTERED_DISTROS_HEADER = "Windows Subsystem for Linux Distributions:"
DISTRO_DEFAULT = "{name} (Default)"
NO_RUNNING_DISTRO = "There are no running distributions."
LIST_ONLINE_HEADER = (
    "The following is a list of valid distributions that can be installed.\n"
    f"Install using '{PROGRAM} --install <Distro>'.\n"
)
HEADER_NAME = "NAME"
HEADER_STATE = "STATE"
HEADER_VERSION = "VERSION"
HEADER_FRIENDLY_NAME = "FRIENDLY NAME"

# Status and version.
STATUS_DEFAULT_DISTRO = "Default Distribution: {name}"
STATUS_DEFAULT_VERSION = "Default Version: {version}"
PACKAGE_VERSIONS = "pywsl version: {pywsl}\nKernel version: {kernel}\nPython version: {python}"

# Versions.
WSL1_NOT_SUPPORTED = "WSL1 is not supported with your current machine configuration."
INVALID_VERSION = "Invalid version '{value}': the supported version is 2."
ALREADY_REQUESTED_VERSION = "The distribution is already the requested version."

# Long-running operations.
IMPORT_PROGRESS = "Import in progress, this may take a few minutes."
EXPORT_PROGRESS = "Export in progress, this may take a few minutes."
LAUNCHING_DISTRO = "Launching {name}..."
PRESS_ANY_KEY_TO_EXIT = "Press any key to exit..."

# Disk images and conversions (Windows, where the installed WslService has them).
INVALID_SIZE = "Invalid size: {value}"
INVALID_BOOLEAN = "{value} is not a valid boolean, <true|false>"
INVALID_INTEGER = "{value} is not a valid integer."
DISK_MOUNTED = (
    "The disk was successfully mounted as '/mnt/wsl/{name}'.\n"
    "Note: The location will be different if you have modified the automount.root setting in "
    "/etc/wsl.conf.\n"
    f"To unmount and detach the disk, run '{PROGRAM} --unmount {{disk}}'."
)
DISK_MOUNT_FAILED = (
    "The disk was attached but failed to mount: {error}.\n"
    "For more details, run 'dmesg' inside WSL2.\n"
    f"To detach the disk, run '{PROGRAM} --unmount {{disk}}'."
)
DETACH_FAILED = (
    "The disk failed to detach: {error}. For more details, please run 'dmesg' inside WSL2.\n"
    f"To force WSL2 to stop and detach the disk, run '{PROGRAM} --shutdown'."
)
VM_MODE_CONVERSION_INFO = "For information on key differences with WSL 2 please visit https://aka.ms/wsl2"
