"""Reasons and fingerprints hold no run noise, and a long fingerprint still shows any change."""

from pathlib import Path

from pytest_vllm import verdicts


def test_denoise_drops_what_changes_between_runs():
    text = ("POST http://127.0.0.1:43121/v1/chat/completions (pid 4242) answered 500: "
            '{"id":"chatcmpl-8e6d3b351dce1647","created":1795421899,"embedding":[-0.11883839219808578]} '
            "at /root/.cache/pytest-vllm/tox/tests/lib/python3.11/site-packages/vllm/x.py "
            "<httpx.Response object at 0x7f3a2c1d9e50> from http://10.0.0.1:8000")
    assert verdicts.denoise(text) == (
        "POST /v1/chat/completions (pid <n>) answered 500: "
        '{"id":"chatcmpl-…","created":<time>,"embedding":[<float>]} '
        "at <path> <httpx.Response object> from <server>"
    )


def test_fingerprint_keeps_the_status_not_the_body():
    try:
        assert False, 'expected a 4xx, got 500: {"error": {"message": "boom 0x7f3a2c1d9e50"}}'
    except AssertionError as error:
        verdict = verdicts.judge(error, error.__traceback__, Path(__file__))
    assert verdict.outcome == "failed"
    assert verdict.reason.startswith("expected a 4xx, got 500: {")
    assert verdict.fingerprint == "expected a 4xx, got 500"


def test_a_long_fingerprint_ends_in_a_hash_of_the_whole():
    head = "CreateCompletionResponse: " + "; ".join(f"/choices/{i}/x: None is not of type 'object'" for i in range(9))
    one, other = verdicts._short(head + "; /created: '1' is not of type 'integer'"), verdicts._short(head)
    assert len(one) <= 200 and len(other) <= 200
    assert one != other and one[:150] == other[:150]
