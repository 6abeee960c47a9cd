"""The llama.cpp engine kept at arm's length: a native fault is our bug, never the user's.

Three parts, each usable alone:

- ``cpu`` and ``safety``: which native configuration to run on this CPU (weights out of AMX buffers where AMX
  is advertised) and the ladder of safer configurations to step down when one crashes;
- ``probe`` and ``verdicts``: the first load of a (model file, llama.cpp build, CPU, configuration) runs a short
  decode in a child process; a child killed by a signal marks that configuration bad in a small cache under
  the user's cache folder, and later loads read the verdict and pay nothing;
- ``client``, ``worker`` and ``supervisor``: the backend itself in a child process behind the same
  ``Backend`` protocol (``Runtime.load(..., isolation="process")``), restarted with backoff by the server
  when it dies.
"""
