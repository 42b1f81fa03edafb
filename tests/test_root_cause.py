"""root_cause: the engine's own exception, found in real vLLM crash logs (excerpts in tests/data)."""

from pathlib import Path

from pytest_vllm.server_logs import root_cause

DATA = Path(__file__).with_name("data")


def test_a_bare_assertion_in_the_engine_says_where_it_was_raised():
    log = (DATA / "vllm-0.25.1-lora-crash.log").read_text()
    assert log.rstrip().endswith("See root cause above. Failed core proc(s): {}")
    assert root_cause(log) == (
        "AssertionError at <site>/vllm/lora/ops/triton_ops/lora_expand_op.py:183: "
        "assert weight.dtype in [torch.float16, torch.bfloat16]"
    )


def test_the_engines_error_wins_over_the_api_servers_later_one():
    log = (DATA / "vllm-0.25.1-idefics3-crash.log").read_text()
    assert "EngineDeadError" in log
    assert root_cause(log) == (
        "RuntimeError: cannot reshape tensor of 0 elements into shape [0, -1] because the "
        "unspecified dimension size -1 can be any value and is ambiguous"
    )


def test_without_an_engine_the_first_traceback_counts_and_a_message_may_go_on_below():
    log = "\n".join(
        [
            "INFO 12-01 13:48:18 [api_server.py:1] starting",
            "Traceback (most recent call last):",
            '  File "/x/site-packages/huggingface_hub/dataclasses.py", line 146, in __strict_setattr__',
            "    raise StrictDataclassFieldValidationError(field=name, cause=e) from e",
            "huggingface_hub.errors.StrictDataclassFieldValidationError: Validation error for field 'hidden_size':",
            "    TypeError: Field 'hidden_size' expected int, got str (value: 'oops')",
            "Traceback (most recent call last):",
            "RuntimeError: later",
        ]
    )
    assert root_cause(log) == (
        "huggingface_hub.errors.StrictDataclassFieldValidationError: Validation error for field "
        "'hidden_size': TypeError: Field 'hidden_size' expected int, got str (value: 'oops')"
    )


def test_a_log_without_a_traceback_has_no_root_cause():
    assert root_cause("INFO started\nERROR something odd\n") is None
    assert root_cause('Traceback (most recent call last):\n  File "x.py", line 1') is None
