"""The fit plan is a tight upper bound of what ``edge-runtime run`` really holds: 1.0 <= plan / peak RSS <= 1.15.

Each run is a fresh process through the real CLI, prefix cache off, measured with ``os.wait4`` (see
``benchmarks.memory_plan``, which also covers batch sizes, full contexts and the batched context).
"""

from __future__ import annotations

import sys

import pytest

from benchmarks.memory_plan import UPPER_RATIO, peak_rss_bytes, planned_bytes, run_argv

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss units and RSS as on Linux")


@pytest.fixture(scope="module")
def verdicts_cached(bundled_path):
    """A first load may probe the configuration in a child; measure loads that only read the verdict."""
    peak_rss_bytes(run_argv(512, 256))


@pytest.mark.parametrize("n_ctx", [512, 4096])
def test_plan_is_a_tight_upper_bound_of_peak_rss(verdicts_cached, n_ctx):
    peak = peak_rss_bytes(run_argv(n_ctx, 256))
    plan = planned_bytes(n_ctx, 256)
    assert 1.0 <= plan / peak <= UPPER_RATIO, f"plan {plan / 2**20:.0f} MiB, peak RSS {peak / 2**20:.0f} MiB"
