"""The device fingerprint: parsers on sample text, and every field present on this machine."""

from __future__ import annotations

from benchmarks import fingerprint
from benchmarks.bench_report import Device

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse4_2 avx avx2 fma f16c avx512f avx512_vnni
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp i8mm
"""
NVIDIA_SMI = "NVIDIA H100 80GB HBM3, 81559, 550.54.15\nTesla V100-SXM2-16GB, 16384, 535.00\n"


def test_x86_cpuinfo_gives_model_and_avx_flags():
    model, flags = fingerprint.parse_cpuinfo(X86_CPUINFO)
    simd = fingerprint.simd_flags(flags, "x86_64")
    assert model == "AMD EPYC 7B13"
    assert simd["avx2"] and simd["avx512"] and simd["avx512_vnni"] and not simd["amx"]


def test_arm_cpuinfo_gives_neon_and_dotprod():
    _, flags = fingerprint.parse_cpuinfo(ARM_CPUINFO)
    simd = fingerprint.simd_flags(flags, "aarch64")
    assert simd["neon"] and simd["dotprod"] and simd["i8mm"] and not simd["sve"]
    assert fingerprint.simd_flags(set(), "arm64")["neon"]  # mandatory on AArch64 (macOS lists no flags)


def test_nvidia_smi_lines_become_gpus_with_vendor_in_the_name():
    gpus = fingerprint.parse_nvidia_smi(NVIDIA_SMI)
    assert [gpu["name"] for gpu in gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA Tesla V100-SXM2-16GB"]
    assert gpus[0]["memory_bytes"] == 81559 * 1024 * 1024 and gpus[1]["driver"] == "535.00"
    assert fingerprint.parse_nvidia_smi("") == []


def test_collect_has_every_field_and_fits_the_report_schema():
    device = fingerprint.collect("test-machine")
    assert device["label"] == "test-machine"
    assert device["cpu"]["model"] and device["cpu"]["usable_cores"] >= 1 and device["ram_bytes"] > 0
    assert set(device["cpu"]["flags"]) >= {"avx2", "avx512"} or device["cpu"]["flags"].get("neon")
    assert device["python"]["version"] and device["os"]["system"]
    assert device["libraries"]["llama-cpp-python"] and device["libraries"]["numpy"]
    assert "system_info" in device["llama_cpp"] and isinstance(device["llama_cpp"]["gpu_offload"], bool)
    assert isinstance(device["gpus"], list) and "n_gpu_layers" in device["accelerator"]
    Device.model_validate(device)
