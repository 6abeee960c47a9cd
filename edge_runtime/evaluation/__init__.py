"""The cascade evaluation (``edge-runtime eval``): local answers, calibrated escalation, an oracle cloud, a report.

It sits in the top layer beside the server because it drives both the runtime (``answerer``) and the fallback
(calibration, policy, gateway, ledger); the fallback's pure logic stays in ``fallback``, and nothing here imports
the benchmarks (they may import this package).
"""
