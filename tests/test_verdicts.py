"""Reasons and fingerprints hold no run noise, and a long fingerprint still shows any change."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_vllm import verdicts

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

if TYPE_CHECKING:
    import httpx


def test_denoise_drops_what_changes_between_runs():
    text = (
        "POST http://127.0.0.1:43121/v1/chat/completions (pid 4242) answered 500: "
        '{"id":"chatcmpl-8e6d3b351dce1647","created":1795421899,"embedding":[-0.11883839219808578]} '
        "at /root/.cache/pytest-vllm/tox/tests/lib/python3.11/site-packages/vllm/x.py "
        "<httpx.Response object at 0x7f3a2c1d9e50> from http://10.0.0.1:8000"
    )
    assert verdicts.denoise(text) == (
        "POST /v1/chat/completions (pid <n>) answered 500: "
        '{"id":"chatcmpl-…","created":<time>,"embedding":[<float>]} '
        "at <path> <httpx.Response object> from <server>"
    )


def test_fingerprint_keeps_the_status_not_the_body():
    try:
        status = 500
        assert status < 500, 'expected a 4xx, got 500: {"error": {"message": "boom 0x7f3a2c1d9e50"}}'
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


def _verdict_of(raise_it) -> verdicts.Verdict:
    verdicts.reset()
    try:
        raise_it()
    except BaseException as error:  # noqa: BLE001 - judged like a check's exception
        return verdicts.judge(error, error.__traceback__, Path(__file__))
    raise AssertionError("nothing was raised")


def _request() -> httpx.Request:
    import httpx

    return httpx.Request("POST", "http://127.0.0.1:8000/v1/chat/completions")


def test_a_broken_connection_and_a_timeout_are_one_class():
    import httpx

    def raising(kind, text):
        def raise_it():
            raise kind(text, request=_request())

        return raise_it

    found = {
        _verdict_of(raising(kind, text)).fingerprint
        for kind, text in [
            (httpx.RemoteProtocolError, "peer closed connection (incomplete chunked read)"),
            (httpx.ReadError, "[Errno 104] Connection reset by peer"),
            (httpx.ReadTimeout, "timed out"),
        ]
    }
    assert found == {"no complete answer to POST /v1/chat/completions (connection broken or timed out)"}


def test_failure_class_is_the_fingerprint_of_every_symptom_inside_it():
    import httpx

    def cut_off():
        with verdicts.failure_class("streams are not each complete"):
            raise httpx.RemoteProtocolError("incomplete chunked read", request=_request())

    def unfinished():
        with verdicts.failure_class("streams are not each complete"):
            verdicts.fingerprint("a narrower fingerprint the class overrides")
            raise AssertionError("stream 3 of 16 ends with one finish_reason and its usage: None, {}")

    one, other = _verdict_of(cut_off), _verdict_of(unfinished)
    assert one.outcome == other.outcome == "failed"
    assert one.fingerprint == other.fingerprint == "streams are not each complete"
    assert "incomplete chunked read" in one.reason and "finish_reason" in other.reason, (one, other)


def test_failure_class_leaves_our_own_errors_and_later_failures_alone():
    def own_error():
        with verdicts.failure_class("streams are not each complete"):
            {}["missing"]

    def after_the_class():
        with verdicts.failure_class("streams are not each complete"):
            pass
        raise AssertionError("the sequential answers: answered 400")

    error, later = _verdict_of(own_error), _verdict_of(after_the_class)
    assert error.outcome == "error" and "KeyError" in error.reason
    assert later.outcome == "failed" and later.fingerprint == "the sequential answers: answered 400"


def test_a_group_of_the_servers_failures_is_a_failure_on_the_oldest_python():
    """Hypothesis and asyncio raise groups; judging one must work on every supported Python (3.10 has
    no builtin BaseExceptionGroup: it comes from the `exceptiongroup` backport there)."""

    def raise_group():
        failures = []
        for text in ("stream 1 of 16 ends without its usage", "stream 2 of 16 ends without its usage"):
            try:
                raise AssertionError(text)
            except AssertionError as error:
                failures.append(error)
        raise ExceptionGroup("two streams", failures)

    verdict = _verdict_of(raise_group)
    assert verdict.outcome == "failed", verdict
    assert verdict.reason == "stream 1 of 16 ends without its usage / stream 2 of 16 ends without its usage"


def test_failure_class_names_only_the_failure_raised_inside_it():
    def handled_then_failed():
        try:
            with verdicts.failure_class("streams are not each complete"):
                raise AssertionError("stream 1 of 16 ends without its usage")
        except AssertionError:
            pass  # the check handled it: a later failure is not of that class
        raise AssertionError("the sequential answers: answered 400")

    verdict = _verdict_of(handled_then_failed)
    assert verdict.fingerprint == "the sequential answers: answered 400", verdict


def test_vllms_system_fingerprint_is_run_noise():
    """It hashes the server's config and model path: a redeploy changes it, the server's behaviour may not."""
    chunk = "{'object': 'chat.completion.chunk', 'system_fingerprint': 'vllm-0.32.0-c917e195', 'choices': []}"
    assert verdicts.denoise(chunk) == "{'object': 'chat.completion.chunk', 'system_fingerprint': '…', 'choices': []}"
