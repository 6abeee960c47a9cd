"""The CPU decision and the safety ladder, with injected llama.cpp system-info strings (any machine)."""

from __future__ import annotations

from edge_runtime.caps import LoadSettings
from edge_runtime.engine import cpu, safety

XEON_AMX = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
            "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | "
            "REPACK = 1 | ")
EPYC_AVX2 = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | "
             "OPENMP = 1 | REPACK = 1 | ")


def test_features_parse_llama_cpp_system_info():
    found = cpu.features(XEON_AMX)
    assert found["AMX_INT8"] and found["AVX512"] and found["REPACK"]
    assert "AMX_INT8" not in cpu.features(EPYC_AVX2)
    assert cpu.features("CPU : AMX_INT8 = 0 | ")["AMX_INT8"] is False


def test_amx_cpus_keep_weights_out_of_extra_buffers():
    batched = LoadSettings(n_parallel=4)
    assert cpu.has_amx(XEON_AMX) and not cpu.has_amx(EPYC_AVX2)
    assert safety.use_extra_buffers(batched, EPYC_AVX2) is True
    assert safety.use_extra_buffers(batched, XEON_AMX) is False
    # an explicit choice wins over the per-CPU rule, both ways
    assert safety.use_extra_buffers(batched.model_copy(update={"extra_buffers": True}), XEON_AMX) is True
    assert safety.use_extra_buffers(batched.model_copy(update={"extra_buffers": False}), EPYC_AVX2) is False


def test_speculative_single_sequence_never_repacks():
    assert safety.use_extra_buffers(LoadSettings(), EPYC_AVX2) is False
    assert safety.use_extra_buffers(LoadSettings(speculative=False), EPYC_AVX2) is True


def test_ladder_steps_down_one_feature_at_a_time_and_skips_no_ops():
    steps = list(safety.ladder(LoadSettings(n_parallel=2, n_threads=2), EPYC_AVX2))
    assert [label for label, _ in steps] == ["as configured", "extra buffer types off", "flash attention off",
                                             "a single thread"]
    assert steps[-1][1].extra_buffers is False and steps[-1][1].flash_attn is False and steps[-1][1].n_threads == 1
    # on an AMX CPU the extra buffers are already off: that step changes nothing and is skipped
    amx_steps = [label for label, _ in safety.ladder(LoadSettings(n_parallel=2, n_threads=2), XEON_AMX)]
    assert amx_steps == ["as configured", "flash attention off", "a single thread"]
    assert safety.next_safer(steps[-1][1], EPYC_AVX2) is None


def test_fingerprint_depends_on_what_llama_cpp_detected():
    assert cpu.cpu_fingerprint(XEON_AMX) != cpu.cpu_fingerprint(EPYC_AVX2)
    assert cpu.cpu_fingerprint(XEON_AMX) == cpu.cpu_fingerprint(XEON_AMX)
