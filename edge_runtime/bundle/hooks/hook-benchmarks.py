"""PyInstaller hook for ``benchmarks``: what ``edge-runtime bench`` needs, not the development benchmarks.

``benchmarks.cli`` is imported by name by ``edge_runtime.cli``; ``benchmarks.bench_run`` runs as a child
process (``__run-module benchmarks.bench_run`` in a frozen build). The other modules are found from there."""

hiddenimports = ["benchmarks.cli", "benchmarks.bench_run", "benchmarks.bench_report", "benchmarks.fingerprint",
                 "benchmarks.accelerators", "benchmarks.roofline"]
