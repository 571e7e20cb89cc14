"""``python -m pywsl.api.service``: the root service in the foreground (as ``pywsl-service``)."""

from pywsl.api.service.server import main

if __name__ == "__main__":
    raise SystemExit(main())
