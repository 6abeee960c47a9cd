"""GPU and execution-provider selection, decided from faked machine reports (this machine has no GPU)."""

from __future__ import annotations

from types import SimpleNamespace

from benchmarks import accelerators
from benchmarks.accelerators import ALL_LAYERS, AcceleratorInfo, choose
from benchmarks.bench_run import RunSpec, provider_notes, spec_for

CPU_ONLY = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | OPENMP = 1 | REPACK = 1 |"
CUDA_BUILD = "CUDA : ARCHS = 890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | CPU : SSE3 = 1 | AVX2 = 1 |"
METAL_BUILD = "Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 | ACCELERATE = 1 | REPACK = 1 |"
OLD_CUDA = "AVX = 1 | AVX2 = 1 | AVX512 = 0 | CUDA = 1 | METAL = 0 | BLAS = 1 | SSE3 = 1 |"
H100 = ("NVIDIA H100 80GB HBM3",)


def test_cpu_build_never_offloads_even_with_a_gpu():
    choice = choose(AcceleratorInfo(CPU_ONLY, llama_gpu_offload=False, gpus=H100))
    assert (choice.n_gpu_layers, choice.llama_device) == (0, "cpu")
    assert "without a GPU backend" in choice.reasons[0]


def test_cuda_build_with_an_nvidia_gpu_offloads_every_layer():
    choice = choose(AcceleratorInfo(CUDA_BUILD, llama_gpu_offload=True, gpus=H100))
    assert (choice.n_gpu_layers, choice.llama_device) == (ALL_LAYERS, "cuda")


def test_cuda_build_without_a_gpu_stays_on_cpu():
    choice = choose(AcceleratorInfo(CUDA_BUILD, llama_gpu_offload=True, gpus=()))
    assert choice.n_gpu_layers == 0 and "no matching GPU" in choice.reasons[0]


def test_cuda_build_ignores_a_gpu_of_another_vendor():
    assert choose(AcceleratorInfo(CUDA_BUILD, True, gpus=("AMD Radeon RX 7900",))).n_gpu_layers == 0


def test_offload_support_is_required():
    choice = choose(AcceleratorInfo(CUDA_BUILD, llama_gpu_offload=False, gpus=H100))
    assert choice.n_gpu_layers == 0 and "no GPU offload support" in choice.reasons[0]


def test_metal_on_apple_silicon_offloads_but_not_on_an_intel_mac():
    apple = AcceleratorInfo(METAL_BUILD, True, (), (), "darwin", "arm64")
    intel = AcceleratorInfo(METAL_BUILD, True, (), (), "darwin", "x86_64")
    assert (choose(apple).n_gpu_layers, choose(apple).llama_device) == (ALL_LAYERS, "metal")
    assert choose(intel).n_gpu_layers == 0


def test_old_system_info_layout_is_understood():
    features = accelerators.llama_build_features(OLD_CUDA)
    assert accelerators.llama_gpu_backend(features) == "cuda"
    assert accelerators.llama_blas(features) and not features["AVX512"]
    assert accelerators.llama_gpu_backend(accelerators.llama_build_features(CPU_ONLY)) is None
    assert accelerators.llama_blas(accelerators.llama_build_features(METAL_BUILD))


def test_onnx_providers_prefer_cuda_only_with_an_nvidia_gpu():
    available = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    with_gpu = choose(AcceleratorInfo(CPU_ONLY, gpus=H100, onnx_providers=available))
    without = choose(AcceleratorInfo(CPU_ONLY, gpus=(), onnx_providers=available))
    assert with_gpu.onnx_providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert without.onnx_providers == ("CPUExecutionProvider",)


def test_onnx_coreml_only_on_macos_and_unknown_providers_are_ignored():
    available = ("CoreMLExecutionProvider", "AzureExecutionProvider", "CPUExecutionProvider")
    mac = choose(AcceleratorInfo(METAL_BUILD, True, (), available, "darwin", "arm64"))
    linux = choose(AcceleratorInfo(CPU_ONLY, False, (), available, "linux", "x86_64"))
    assert mac.onnx_providers == ("CoreMLExecutionProvider", "CPUExecutionProvider")
    assert linux.onnx_providers == ("CPUExecutionProvider",)


def test_no_onnxruntime_means_no_providers():
    choice = choose(AcceleratorInfo(CPU_ONLY))
    assert choice.onnx_providers == () and "not installed" in choice.reasons[1]


def test_missing_llama_cpp_is_said_as_such():
    choice = choose(AcceleratorInfo("", gpus=H100))
    assert choice.n_gpu_layers == 0 and "not installed" in choice.reasons[0]


def test_detect_on_this_machine_reads_real_libraries():
    info = accelerators.detect()
    assert "AVX" in info.llama_system_info or "NEON" in info.llama_system_info or info.llama_system_info == ""
    assert isinstance(choose(info).n_gpu_layers, int)


def _options(use_gpu=True):
    return SimpleNamespace(prompt_lengths=[16], decode_tokens=8, runs=1, threads=1, use_gpu=use_gpu)


def test_run_spec_offloads_only_gguf_and_respects_no_gpu():
    choice = {"n_gpu_layers": ALL_LAYERS, "onnx_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    gguf = SimpleNamespace(backend="gguf", path="m.gguf")
    onnx = SimpleNamespace(backend="onnx", path="build")
    assert spec_for(gguf, _options(), choice).n_gpu_layers == ALL_LAYERS
    assert spec_for(gguf, _options(use_gpu=False), choice).n_gpu_layers == 0
    assert spec_for(onnx, _options(), choice).n_gpu_layers == 0
    assert spec_for(onnx, _options(), choice).onnx_providers[0] == "CUDAExecutionProvider"


def test_a_gpu_provider_the_backend_did_not_use_is_reported():
    spec = RunSpec("onnx", "build", onnx_providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    notes = provider_notes("onnx", spec, {"execution_providers": ["CPUExecutionProvider"]})
    assert notes and "CUDAExecutionProvider" in notes[0]
    assert provider_notes("onnx", spec, {"execution_providers": ["CUDAExecutionProvider"]}) == []
