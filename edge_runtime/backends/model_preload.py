"""A GGUF model's native load, started before the backend's Python is imported: what a cold start overlaps.

llama.cpp's model load (mapping the weights, reading the vocabulary: about 0.45 s for the bundled model on
these VMs) runs in C with the GIL released, while importing numpy and the backend's modules (about 60 ms) is
Python work the other core can do at the same time. ``load_backend`` starts the load on a thread (``start``)
before it imports the backend; ``open_native`` takes the model (``take``) when its arguments match, and loads
it itself otherwise. A started load nobody takes (the backend failed to import) is freed (``discard``).
Nothing here imports numpy.
"""

from __future__ import annotations

import threading
from pathlib import Path

from edge_runtime.caps import LoadSettings

_started: dict[tuple, tuple[threading.Thread, dict]] = {}
_lock = threading.Lock()


def model_arguments(path: Path, settings: LoadSettings) -> tuple[str, bool, int, bool]:
    """(path, use_mmap, n_gpu_layers, repack_weights): what ``NativeModel`` is opened with for ``settings``."""
    from edge_runtime.engine.cpu import system_info
    from edge_runtime.engine.safety import use_extra_buffers

    return str(path), settings.use_mmap, settings.n_gpu_layers, use_extra_buffers(settings, system_info())


def open_model(arguments: tuple[str, bool, int, bool]):
    """A ``NativeModel`` opened with ``model_arguments``."""
    from edge_runtime.backends.llamacpp_native import NativeModel

    path, use_mmap, n_gpu_layers, repack_weights = arguments
    return NativeModel(Path(path), use_mmap=use_mmap, n_gpu_layers=n_gpu_layers, repack_weights=repack_weights)


def start(path: Path, settings: LoadSettings) -> tuple:
    """Starts loading the model on a thread and returns its key (``discard`` it when done); a malformed file is
    refused here first, as ``open_native`` does. Loads of other callers are left alone."""
    from edge_runtime.gguf_file import read_header

    read_header(path)  # llama.cpp aborts the process on some malformed files
    arguments = model_arguments(path, settings)
    outcome: dict = {}

    def load() -> None:
        try:
            outcome["model"] = open_model(arguments)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever takes the model
            outcome["error"] = exc

    thread = threading.Thread(target=load, name="edge-runtime-model-load", daemon=True)
    discard(arguments)  # one started load per arguments: an older one nobody took is freed
    with _lock:
        _started[arguments] = (thread, outcome)
    thread.start()
    return arguments


def take(arguments: tuple[str, bool, int, bool]):
    """The model a ``start`` with these arguments loaded (waiting for it), or None when none was started."""
    with _lock:
        entry = _started.pop(arguments, None)
    if entry is None:
        return None
    thread, outcome = entry
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["model"]


def discard(arguments: tuple | None = None) -> None:
    """Frees the started load of ``arguments`` if nobody took it (every such load with None)."""
    with _lock:
        if arguments is None:
            entries = list(_started.values())
            _started.clear()
        else:
            entries = [_started.pop(arguments)] if arguments in _started else []
    for thread, outcome in entries:
        thread.join()
        if "model" in outcome:
            outcome["model"].close()
