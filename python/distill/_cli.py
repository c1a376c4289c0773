"""The ``distill`` command, as the package installs it: the same command as the Rust binary,
run inside Python so that pipelines with Python steps (``type: py:MODULE:NAME``) run too.
Modules are imported from the current directory and the installed packages."""

from __future__ import annotations

import os
import sys

from . import _distill


def main() -> None:
    """Runs ``distill`` with the process's arguments and exits with its code."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    sys.exit(_distill.cli_main(["distill", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
