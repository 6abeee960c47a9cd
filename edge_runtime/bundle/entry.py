"""The frozen executable's ``__main__``: the ``edge-runtime`` command, and ``__run-module`` for its children."""

import sys

from edge_runtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
