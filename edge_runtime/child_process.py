"""How the runtime starts Python children (engine worker, native probe, benchmark runner) and names their deaths.

Two things every place that runs a child needs, kept in one spot:

- the command line: ``python -m MODULE`` from a virtual environment, and the same through the executable itself
  when the runtime is frozen into one file (PyInstaller and friends have no ``-m``: the frozen ``edge-runtime``
  treats ``__run-module MODULE`` as that request, see ``edge_runtime.cli.main``);
- a readable account of how a child ended: "was killed by SIGSEGV", not "failed: no output".
"""

from __future__ import annotations

import signal
import sys

RUN_MODULE_COMMAND = "__run-module"


def is_frozen() -> bool:
    """True inside a one-file executable (PyInstaller sets ``sys.frozen``)."""
    return bool(getattr(sys, "frozen", False))


def python_module_argv(module: str, *args: str) -> list[str]:
    """The argv that runs ``module`` as ``__main__`` in a fresh interpreter of this installation."""
    if is_frozen():
        return [sys.executable, RUN_MODULE_COMMAND, module, *args]
    return [sys.executable, "-m", module, *args]


def run_module_main(argv: list[str]) -> int:
    """Runs ``argv[0]`` as ``__main__`` with ``argv[1:]`` as its arguments (the frozen ``-m``)."""
    import runpy

    if not argv:
        print("usage: edge-runtime __run-module MODULE [ARGS...]", file=sys.stderr)
        return 2
    sys.argv = [argv[0], *argv[1:]]
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    return 0


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_exit(returncode: int | None) -> str:
    """How a child ended, for an error message: "was killed by SIGSEGV", "exited with status 3", ..."""
    if returncode is None:
        return "is still running"
    if returncode < 0:
        return f"was killed by {signal_name(-returncode)}"
    if returncode > 128 and returncode - 128 in {s.value for s in signal.Signals}:
        return f"exited with status {returncode} ({signal_name(returncode - 128)} in a shell)"
    return f"exited with status {returncode}"


def killed_by_signal(returncode: int | None) -> bool:
    """True when a child died by a signal (a native crash, an OOM kill, a kill from outside)."""
    return returncode is not None and returncode < 0
