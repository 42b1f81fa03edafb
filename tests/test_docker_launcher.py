"""The docker launcher on a real Docker engine: the fake vLLM in a container for its mechanics and clean-up
(a passing and a failing run, Ctrl-C, SIGTERM, kill -9 then a new run), real vLLM in the CPU image for a
crash at start and the shipped suites gated as the subprocess run is (same verdicts).

The engine is the one running, else dockerd started here (as root); only where none can be started do these
tests skip, saying why. The images are built once per recipe (pytest_vllm.cpu_image) and kept by the engine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from docker_engine import engine, fake_image
from helpers import load_results, run_suites
from test_conformance import MODELS

from pytest_vllm import cpu_image
from pytest_vllm.docker_launcher import OWNER_LABEL, RUN_LABEL, DockerLauncher, _mounts, _owner_alive, listed, reap
from pytest_vllm.launchers import ServerSpec
from pytest_vllm.outcomes import VllmServerError
from pytest_vllm.processes import stat_fields


@pytest.fixture(scope="module")
def docker_client(tmp_path_factory):
    pytest.importorskip("docker", reason="the Docker SDK for Python is not installed (pytest-vllm[docker])")
    with engine(tmp_path_factory.mktemp("dockerd")) as client:
        if isinstance(client, str):
            warnings.warn(f"the docker launcher's tests on a real engine do not run: {client}", stacklevel=1)
            pytest.skip(client)
        yield client


@pytest.fixture(scope="module")
def fake(docker_client):
    return fake_image(docker_client)


@pytest.fixture(scope="module")
def cpu(docker_client):
    started = time.monotonic()
    tag = cpu_image.build(docker_client, log=print)
    print(f"\nthe CPU image {tag}: ready in {time.monotonic() - started:.0f} s")
    return tag


def containers(client, **labels: str) -> list:
    """The containers of pytest-vllm runs (all states), those with `labels` only if given."""
    wanted = [f"{name}={value}" for name, value in labels.items()] or [RUN_LABEL]
    return listed(client, label=wanted)


def owned_by(client, pid: int) -> list:
    return [c for c in containers(client) if c.labels[OWNER_LABEL].split()[2] == str(pid)]


def docker_args(image: str) -> list[str]:
    return ["-p", "no:cacheprovider", "--vllm-launcher", "docker", "--vllm-image", image, "--vllm-model", "fake/m"]


def test_a_launcher_not_registered_is_a_usage_error_listing_them(pytester):
    pytester.makepyfile("def test_x(vllm_server):\n    pass\n")
    result = pytester.runpytest_subprocess("--vllm-launcher", "kubernetes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vllm-launcher (--vllm-launcher): valid launchers: subprocess, docker*"])


def test_the_docker_launcher_needs_an_image(pytester):
    pytester.makepyfile("def test_x(vllm_server):\n    pass\n")
    result = pytester.runpytest_subprocess("--vllm-launcher", "docker")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vllm-launcher docker needs --vllm-image IMAGE*"])


def test_a_run_is_reaped_only_once_its_owner_is_gone():
    here, boot = socket.gethostname(), Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    started = stat_fields(os.getpid())[19]
    assert _owner_alive(f"{here} {boot} {os.getpid()} {started}")
    assert not _owner_alive(f"{here} {boot} {os.getpid()} {int(started) + 1}"), "the pid now names another process"
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert not _owner_alive(f"{here} {boot} {gone.pid} 1")
    assert not _owner_alive(f"{here} another-boot {os.getpid()} {started}")
    assert _owner_alive(f"another-host {boot} {gone.pid} 1"), "another host's runs are left to it"


def test_the_model_folder_and_paths_among_the_arguments_are_mounted(tmp_path):
    model = tmp_path / "model"
    (model / "loras").mkdir(parents=True)
    template = tmp_path / "chat.jinja"
    template.write_text("{{ messages }}")
    args = ("--lora-modules", f"a={model}/loras", "--chat-template", str(template), "--seed", "0")
    assert _mounts(ServerSpec(str(model), serve_args=args)) == [str(template), str(model)]
    assert _mounts(ServerSpec("org/hub-model")) == [], "a hub id is passed through"


def test_start_mounts_the_model_read_only_and_stop_keeps_the_log(docker_client, fake, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    spec = ServerSpec(str(model), "served", ("--lora-modules", f"a={model}/a"), api_key="sekrit-key-123")
    launcher = DockerLauncher(fake, None, request_timeout=30)
    server = launcher.start(spec, tmp_path, timeout=120)
    try:
        [container] = containers(docker_client, **{RUN_LABEL: tmp_path.name})
        mounts = container.attrs["Mounts"]
        assert [(m["Source"], m["Destination"], m["RW"]) for m in mounts] == [(str(model), str(model), False)]
        assert server.launched_by == "docker" and server.models == ["served"] and server.is_alive()
        assert "sekrit" not in " ".join(server.launch_args), "the key stays out of the command line"
        assert server.base_url.startswith("http://127.0.0.1:")
        ports = container.attrs["HostConfig"]["PortBindings"] or {}
        assert all(b["HostIp"] == "127.0.0.1" for bindings in ports.values() for b in bindings)
    finally:
        launcher.stop(server)
    assert containers(docker_client, **{RUN_LABEL: tmp_path.name}) == []
    assert not server.is_alive()
    assert "fake vllm starting in mode ok" in Path(server.log_path).read_text(), "the log outlives the container"


def test_a_container_that_exits_at_start_fails_at_once_with_its_log(docker_client, fake, tmp_path):
    launcher = DockerLauncher(fake, None, request_timeout=30)
    started = time.monotonic()
    with pytest.raises(VllmServerError) as error:
        launcher.start(ServerSpec("m", env=(("FAKE_VLLM_MODE", "crash"),)), tmp_path, timeout=600)
    assert time.monotonic() - started < 60, "an exited container fails at once, not at the timeout"
    first, *rest = str(error.value).splitlines()
    assert first.startswith("vLLM exited with code 1 before it was ready (docker run --rm --init "), first
    assert rest[-1] == "ValueError: No supported config format found in /broken/model", "its log's tail, kept"
    assert containers(docker_client, **{RUN_LABEL: tmp_path.name}) == []


def test_a_command_not_in_the_image_fails_at_once_and_says_so(docker_client, fake, tmp_path):
    launcher = DockerLauncher(fake, "/no/such/vllm serve", request_timeout=30)
    with pytest.raises(VllmServerError) as error:
        launcher.start(ServerSpec("m"), tmp_path, timeout=600)
    assert "vLLM exited with code 127 before it was ready" in str(error.value)
    assert "exec /no/such/vllm failed: No such file or directory" in str(error.value)
    assert containers(docker_client, **{RUN_LABEL: tmp_path.name}) == []


@pytest.mark.parametrize("fails", [False, True], ids=["passing", "failing"])
def test_a_run_leaves_no_container(docker_client, fake, pytester, fails):
    pytester.makepyfile(f"def test_x(vllm_server):\n    assert vllm_server.model == 'fake/m' and not {fails}\n")
    before = {c.id for c in containers(docker_client)}
    result = pytester.runpytest_subprocess(*docker_args(fake), "-n", "2")
    result.assert_outcomes(passed=int(not fails), failed=int(fails))
    assert {c.id for c in containers(docker_client)} <= before


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_leaves_no_container(docker_client, fake, pytester, stop):
    process = _waiting_run(pytester, fake)
    assert owned_by(docker_client, process.pid), "the run's container carries its owner"
    process.send_signal(stop)
    output = process.communicate(timeout=120)[0]
    assert "KeyboardInterrupt" in output
    assert owned_by(docker_client, process.pid) == [], f"{stop.name} left the container"


def test_a_new_run_removes_the_containers_of_a_killed_one(docker_client, fake, pytester):
    process = _waiting_run(pytester, fake)
    process.kill()
    process.wait()
    assert owned_by(docker_client, process.pid), "SIGKILL leaves the container (nothing runs to remove it)"
    pytester.makepyfile("def test_x(vllm_server):\n    pass\n")
    pytester.runpytest_subprocess(*docker_args(fake)).assert_outcomes(passed=1)
    assert owned_by(docker_client, process.pid) == [], "the new run removed the killed run's container"
    assert reap(docker_client) == 0, "nothing else was left"


def test_a_container_removed_while_listed_does_not_fail_a_launch(docker_client, fake, tmp_path, monkeypatch):
    """The SDK lists containers, then inspects each: one another process removes in between (in CI, a stopped
    container the daemon was still deleting) made the reaper raise NotFound, and the launch behind it an error."""
    gone = docker_client.containers.create(fake, labels={RUN_LABEL: "gone", OWNER_LABEL: "elsewhere 0 1 2"})
    inspect = docker_client.api.inspect_container

    def removed_first(container_id):
        if container_id == gone.id:
            gone.remove(force=True)
        return inspect(container_id)

    monkeypatch.setattr(docker_client.api, "inspect_container", removed_first)
    assert reap(docker_client) == 0
    assert [c.id for c in listed(docker_client, label=RUN_LABEL)] == []
    DockerLauncher(fake, None, request_timeout=30).close(tmp_path)


def _waiting_run(pytester, fake) -> subprocess.Popen:
    """A run whose one check holds its server in a container until the run is stopped."""
    pytester.makepyfile("""
        import time

        def test_waits(vllm_server):
            print("READY", flush=True)
            time.sleep(120)
    """)
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-s", *docker_args(fake)],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        text=True,
        # as from a terminal: an xdist worker ignores SIGINT, and Python keeps an inherited SIG_IGN
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "READY" in line:
            break
    return process


real_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed here")


@real_vllm
def test_vllm_in_a_container_that_exits_at_start_fails_within_seconds_with_its_error(docker_client, cpu, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": "oops"}))
    launcher = DockerLauncher(cpu, None, request_timeout=60)
    started = time.monotonic()
    with pytest.raises(VllmServerError) as error:
        launcher.start(ServerSpec(str(broken), env=(("HF_HUB_OFFLINE", "1"),)), tmp_path, timeout=3600)
    took = time.monotonic() - started
    first = str(error.value).splitlines()[0]
    assert first.startswith("root cause: ") and "hidden_size" in first, str(error.value)
    assert took < 300, f"the exited container failed after {took:.0f} s, not at once"
    print(f"\nvLLM exiting at start in a container failed the launch in {took:.0f} s: {first}")
    assert containers(docker_client, **{RUN_LABEL: tmp_path.name}) == []


@real_vllm
def test_the_suites_in_containers_pass_the_gate_as_in_subprocesses(docker_client, cpu, real_vllm_turn, tmp_path):
    expected, _, models = MODELS["tiny-chat"]
    report = tmp_path / "report.json"
    args = ["-n", "2", "--vllm-fuzz", "seed", "--vllm-baseline", str(expected), "--vllm-report", str(report)]
    before = {c.id for c in containers(docker_client)}
    started = time.monotonic()
    done = run_suites(*args, "--vllm-launcher", "docker", "--vllm-image", cpu, cwd=tmp_path, timeout=3600)
    took = time.monotonic() - started
    data = load_results(report, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    assert {c.id for c in containers(docker_client)} <= before, "the run left containers"
    assert done.returncode == 0 and data["gate"]["ok"], "the gate failed: " + "\n".join(
        line for line in done.stdout.splitlines() if line.startswith(("regression:", "missing:", "baseline "))
    )
    assert not data["gate"]["new"], data["gate"]["new"]
    assert sorted(s["model"] for s in data["servers"]) == models
    assert {s["launched_by"] for s in data["servers"]} == {"docker"}
    _print_startup(data["servers"], took)


def _print_startup(servers: list[dict], took: float) -> None:
    """Each server's start-up time in a container beside the subprocess run's (its report, where one ran)."""
    subprocess_report = Path.cwd() / "pytest-vllm-report.json"
    before = json.loads(subprocess_report.read_text())["servers"] if subprocess_report.exists() else []
    print(f"\nthe suites in containers: {took:.0f} s; each server's start-up (s) in a container, then as a subprocess:")
    for model in sorted({s["model"] for s in servers}):
        docker_times = sorted(s["startup_seconds"] for s in servers if s["model"] == model)
        subprocess_times = sorted(s["startup_seconds"] for s in before if s["model"] == model) or "-"
        print(f"  {model:15} docker {docker_times}  subprocess {subprocess_times}")
