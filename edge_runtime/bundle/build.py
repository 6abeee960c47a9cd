"""``make bundle``: freeze edge-runtime into one executable with the model inside, once.

    python -m edge_runtime.bundle.build [--dist dist] [--work build/bundle] [--model GGUF]
    python -m edge_runtime.bundle.build --embed-only EXECUTABLE [--model GGUF]

1. the model: ``--model`` or the bundled default (assembled into the user cache once, sha256 checked);
2. PyInstaller one-file from ``edge-runtime.spec`` (build files under ``--work``, never next to the result);
3. the GGUF embedded in the executable before PyInstaller's archive (``payload.py``), its sha256 recorded in
   the trailer and checked back.

``--embed-only`` does step 3 for a one-file executable an app built with its own spec (see README, "Ship it in an
app"). Needs PyInstaller (``pip install -e '.[server,bundle]'``) and, on Linux, binutils' ``objcopy``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edge_runtime.model_payload import Payload, embed_payload, find_payload, verify

SPEC = Path(__file__).with_name("edge-runtime.spec")
NAME = "edge-runtime"


def default_model() -> Path:
    from edge_runtime.models import bundled_model_path

    return bundled_model_path()


def freeze(dist: Path, work: Path) -> Path:
    """Runs PyInstaller on the spec; returns the executable (without the model yet)."""
    import PyInstaller.__main__

    PyInstaller.__main__.run([str(SPEC), "--noconfirm", "--log-level", "WARN",
                              "--distpath", str(dist), "--workpath", str(work)])
    return dist / NAME


def attach_model(executable: Path, model: Path) -> Payload:
    payload = embed_payload(executable, model)
    found = find_payload(executable)
    if found != payload or not verify(found):
        raise SystemExit(f"{executable}: the embedded model does not read back (sha256 mismatch)")
    return payload


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_runtime.bundle.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", type=Path, default=Path("dist"), help="output folder (default ./dist)")
    parser.add_argument("--work", type=Path, default=Path("build/bundle"), help="PyInstaller's build folder")
    parser.add_argument("--model", type=Path, default=None, help="GGUF to carry (default: the bundled model)")
    parser.add_argument("--embed-only", type=Path, default=None, metavar="EXECUTABLE",
                        help="only embed the model into an executable built elsewhere")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model = args.model or default_model()
    executable = args.embed_only or freeze(args.dist, args.work)
    frozen_size = executable.stat().st_size
    payload = attach_model(executable, model)
    print(f"{executable}: {_megabytes(executable.stat().st_size)} = program {_megabytes(frozen_size)} "
          f"+ model {payload.name} {_megabytes(payload.length)} (sha256 {payload.sha256[:12]}...); "
          f"built in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
