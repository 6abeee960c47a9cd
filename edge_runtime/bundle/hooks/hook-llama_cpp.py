"""PyInstaller hook for ``llama_cpp``: its shared libraries, loaded by ctypes from ``llama_cpp/lib`` next to the
package (PyInstaller's scan sees no import of them), and its metadata (the device fingerprint names the
version)."""

from PyInstaller.utils.hooks import collect_dynamic_libs, copy_metadata

binaries = collect_dynamic_libs("llama_cpp")
datas = copy_metadata("llama-cpp-python")
