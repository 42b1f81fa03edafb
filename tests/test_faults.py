"""Proof that every check can fail: the shipped suites through a fault-injecting proxy, against real vLLM.

For each suite module, one or more realistic faults from tests/faults.py (a bug of the kind real
servers and gateways ship) make named checks of that module FAIL, and the failure says what broke;
through the same proxy with no fault the same checks PASS. A fault that turned a check unsupported,
or an error, would not count: the outcome must be `failed`. tests/fault_runs.py runs the suites
(a subprocess a run, against four real vLLM servers behind tests/fault_proxy.py).
`python tests/test_faults.py` prints this table:

{table}
"""

from __future__ import annotations

import fnmatch
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import fault_runs
import faults
import pytest
from fault_runs import CHAT, EMBED, RERANK, SERVERS, VISION, run_against

NEEDS_VLLM = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed here")
upstreams, proxies, runs = fault_runs.upstreams, fault_runs.proxies, fault_runs.runs  # the fixtures of the runs


@dataclass(frozen=True)
class Case:
    """`fault` makes each check matching a pattern of `fails` (under suites/) fail on `server`."""

    module: str
    fault: str
    server: str
    select: str  # a -k expression, within the module
    fails: tuple[str, ...]
    reason: str = ""  # a fragment the first failing check's message holds

    @property
    def id(self) -> str:
        return f"{self.module}-{self.fault}-{self.fails[0].split('::')[1].split('[')[0].removeprefix('test_')}"

    @property
    def param(self):
        return pytest.param(self, id=self.id)

    @property
    def keyword(self) -> str:
        return f"test_{self.module}.py and ({self.select})"


# The server of a suite module's checks, where not tiny-chat.
MODULE_SERVERS = {"classify": RERANK, "embeddings": EMBED, "vision": VISION}


def case(module: str, fault: str, *checks: str, reason: str, select: str = "") -> Case:
    """`fault` makes `checks` (patterns of test_<module>.py's checks) fail, the first saying `reason`.

    `select`, the -k expression running them, defaults to the checks' function name.
    """
    if not select:
        [select] = {check.split("[")[0] for check in checks}
    fails = tuple(f"test_{module}.py::{check}" for check in checks)
    return Case(module, fault, MODULE_SERVERS.get(module, CHAT), select, fails, reason)


# One line a case: case(suite module, fault, the checks it makes fail, reason=a fragment of the first one's
# message, select=the -k expression running them where it is not their function's name).
# fmt: off
CASES = [
    case("auth", "any-bearer-key-accepted", "test_without_the_right_key_is_401[wrong-key-*]", reason="must be refused with 401", select="wrong-key"),
    case("auth", "any-bearer-key-accepted", "test_sdk_raises_authentication_error", reason="AuthenticationError"),
    case("auth", "metrics-behind-the-key", "test_path_open_without_a_key[metrics]", reason="stays open"),
    case("chat", "max_completion_tokens-ignored", "test_length_limit_is_exact_with_ignore_eos[max_completion_tokens]", reason="caps the completion"),
    case("chat", "stop-ignored", "test_stop_string[*]", reason="holds the stop string"),
    case("chat", "n-ignored", "test_n_choices", reason="n=3 gives choices"),
    case("chat", "system-message-dropped", "test_system_prompt_and_earlier_turns_reach_the_model", reason="each adds prompt tokens"),
    case("chat", "completion_tokens-off-by-one", "test_conversation_answers_as_assistant[*]", reason="completion tokens for max_tokens"),
    case("chat", "chat-logprobs-in-completions-format", "test_logprobs_structure[*]", reason="not the completions format"),
    case("completions", "echo-ignored", "test_echo_prepends_the_prompt", reason="with echo"),
    case("completions", "seed-ignored", "test_same_request_same_text[seeded]", reason="reproducible"),
    case("classify", "classify-use_activation-ignored", "test_use_activation_false_gives_the_logits", reason="use_activation=false gives the logits"),
    case("completions", "stop_reason-dropped", "test_stop_token_ids", reason="stop_reason"),
    case("completions", "logit_bias-ignored", "test_logit_bias_forces_a_token", reason="logit_bias +100"),
    case("completions", "min_tokens-ignored", "test_min_tokens_defers_stopping", reason="min_tokens=4"),
    case("completions", "batch-choices-all-index-0", "test_prompt_list_keeps_order_and_index", reason="index"),
    case("completions", "prompt_tokens-off-by-one", "test_usage_arithmetic[*]", reason="prompt_tokens should equal"),
    case("embeddings", "embedding-dimensions-ignored", "test_dimensions_shortens_the_vector", reason="gives a vector of"),
    case("embeddings", "embedding-base64-float64", "test_base64_decodes_to_the_floats", reason="little-endian float32"),
    case("embeddings", "embedding-batch-out-of-order", "test_list_input_keeps_order_and_index", reason="as embedded alone"),
    case("embeddings", "rerank-sorted-ascending", "test_rerank_orders_and_limits", reason="sorted by relevance_score"),
    case("errors", "400-answered-as-500", "test_invalid_request_is_rejected[chat-temperature-*]", reason="never 500", select="test_invalid_request_is_rejected and temperature"),
    case("errors", "out-of-range-clamped", "test_invalid_request_is_rejected[chat-temperature-below-0]", "test_invalid_request_is_rejected[chat-temperature-above-2]", "test_invalid_request_is_rejected[chat-top_p-*]", reason="got 200", select="test_invalid_request_is_rejected and (temperature or top_p)"),
    case("errors", "flat-error-body", "test_rejection_has_openai_error_envelope[chat-temperature-*]", reason="an OpenAI error body", select="test_rejection_has_openai_error_envelope and temperature"),
    case("errors", "405-answered-as-404", "test_unknown_route_or_method[GET-/v1/chat/completions]", "test_unknown_route_or_method[DELETE-/v1/models]", reason="the wrong method 405"),
    case("fuzz", "400-answered-as-500", "test_schema_shaped_bodies_are_served_or_refused[completions]", "test_schema_shaped_bodies_are_served_or_refused[chat]", "test_schema_shaped_bodies_are_served_or_refused[responses]", reason="never 500"),
    case("fuzz", "400-answered-as-500", "test_arbitrary_sampling_params_never_cause_a_server_error[*]", reason="never 500"),
    case("health", "health-json-body", "test_health_is_200_with_empty_body", reason="body should be empty"),
    case("health", "version-dev", "test_version_is_a_version_string", reason="'X.Y...'"),
    case("lora", "lora-adapter-not-applied", "test_adapter_serves_its_requests", reason="should change the model's greedy output"),
    case("lora", "runtime-lora-not-listed", "test_runtime_load_and_unload[v1]", "test_runtime_load_and_unload[adapters]", reason="is listed in /v1/models"),
    case("lora", "runtime-lora-not-listed", "test_random_lifecycles_keep_the_adapters_state[*]", reason="loaded are"),
    case("lora", "unknown-model-falls-back", "test_unknown_adapter_is_404", reason="should be 404"),
    case("metrics", "metric-renamed", "test_vllm_metric_is_exposed[vllm:prompt_tokens]", reason="vLLM exposes vllm:prompt_tokens", select="test_vllm_metric_is_exposed and prompt_tokens"),
    case("metrics", "metrics-stale", "test_counters_move_after_a_completion", reason="each counter grows"),
    case("models", "models-created-as-string", "test_models_list_matches_openai_schema", reason="created"),
    case("models", "models-max_model_len-missing", "test_model_entries_carry_vllm_extras", reason="max_model_len"),
    case("schema", "stream-created-as-string", "test_response_matches_openai_schema[chat-stream]", "test_response_matches_openai_schema[chat-stream-usage]", reason="created", select="test_response_matches_openai_schema and chat-stream"),
    case("routes", "batch-choices-all-index-0", "test_chat_batch_answers_each_conversation", reason="one choice per conversation"),
    case("sampling", "always-greedy", "test_seed_repeats_and_other_seeds_differ", reason="all gave the same text"),
    case("sampling", "top_k-ignored", "test_keeping_only_the_likeliest_token_is_greedy[top_k=1]", reason="keeps only the likeliest token", select="test_keeping_only_the_likeliest_token_is_greedy and top_k"),
    case("sampling", "allowed_token_ids-ignored", "test_allowed_token_ids_confine_every_token", reason="confines every token"),
    case("sampling", "beam-search-ignored", "test_beam_search_of_width_one_is_greedy", "test_beam_search_beams_are_distinct", reason="beam", select="test_beam_search"),
    case("sampling", "stream_interval-ignored", "test_stream_interval_puts_that_many_tokens_in_a_chunk", reason="chunks"),
    case("sampling", "request_id-dropped", "test_request_id_names_the_response", reason="names the request"),
    case("sampling", "chat_template-ignored", "test_request_chat_template_is_refused_or_applied", reason="accepted but not applied"),
    case("sampling", "penalties-ignored", "test_penalties_lower_what_was_generated[frequency]", "test_penalties_lower_what_was_generated[presence]", reason="scores higher after the penalty"),
    case("sampling", "logit_bias-ignored", "test_logit_bias_minus_100_forbids_a_token", reason="forbids it"),
    case("concurrency", "concurrent-answers-crossed", "test_concurrent_greedy_answers_leave_the_sequential_ones_only_at_near_ties", reason="where the model was sure", select="test_concurrent_greedy_answers"),
    case("concurrency", "sse-done-missing", "test_simultaneous_streams_are_each_complete", reason="[DONE]"),
    case("concurrency", "streams-broken-under-load", "test_simultaneous_streams_are_each_complete", reason="incomplete chunked read"),
    case("responses", "tool-strict-dropped", "test_required_tool_choice_calls_a_listed_function", reason="follow the strict tool's schema"),
    case("responses", "responses-events-unnumbered", "test_stream_events_are_ordered_and_join_to_the_text", reason="sequence_number counts the events"),
    case("messages", "tool-strict-dropped", "test_tool_choice_any_calls_a_listed_tool", reason="follows the tool's input_schema"),
    case("messages", "messages-stop_reason-null", "test_message_is_an_assistant_text_reply", reason="ends its turn or at max_tokens"),
    case("streaming", "sse-done-missing", "test_chunks_share_id_created_and_object[*]", reason="[DONE]"),
    case("streaming", "sse-single-newline-framing", "test_chunks_share_id_created_and_object[*]", reason="blank line"),
    case("streaming", "stream-usage-on-every-chunk", "test_include_usage_adds_one_final_usage_chunk[*]", reason="only the final chunk carries usage"),
    case("streaming", "stream-role-in-every-delta", "test_chat_role_comes_in_the_first_delta[*]", reason="later deltas don't"),
    case("streaming", "stream-first-token-lost", "test_stream_joins_to_the_non_streamed_answer[*]", reason="must equal the non-streamed answer"),
    case("structured_outputs", "structured-outputs-not-enforced", "test_invalid_constraint_is_rejected[*]", "test_output_meets_its_constraint[structured_outputs-regex-*]", "test_output_meets_its_constraint[structured_outputs-choice-*]", reason="must be refused with a 4xx", select="(test_invalid_constraint_is_rejected or test_output_meets_its_constraint) and (regex or choice)"),
    case("tokenize", "tokenize-count-off-by-one", "test_count_and_max_model_len", reason="count is the number of tokens"),
    case("tokenize", "detokenize-drops-a-character", "test_round_trip[*]", reason="tokenizes to the same tokens"),
    case("tokenize", "tokenize-messages-without-generation-prompt", "test_messages_count_matches_chat_usage", reason="same chat template"),
    case("tools", "tool-calls-not-parsed", "test_required_calls_a_tool[*]", reason="answered with no tool call"),
    case("tools", "truncated-call-finishes-tool_calls", "test_call_cut_by_max_tokens_finishes_with_length[*]", reason="must be 'length'"),
    case("tools", "streamed-tool-arguments-null", "test_streamed_calls_join_to_the_non_streamed_calls[*]", reason="malformed tool calls"),
    case("vision", "image-parts-dropped", "test_image_part_is_answered[png+text]", "test_image_changes_the_output", reason="image", select="test_image_part_is_answered or test_image_changes_the_output"),
    case("vision", "400-answered-as-500", "test_bad_image_content_is_4xx[corrupt-image]", reason="refused with a 4xx"),
]
# fmt: on


def _table() -> str:
    rows = ["| suite module | fault | a check it makes fail | the real-world bug it imitates |", "|---|---|---|---|"]
    for c in CASES:
        check = c.fails[0].split("::", 1)[1]
        rows.append(f"| test_{c.module}.py | `{c.fault}` | `{check}` | {faults.describe(c.fault)} |")
    return "\n".join(rows)


__doc__ = __doc__.format(table=_table())


def matching(checks: dict[str, dict], pattern: str) -> dict[str, dict]:
    return {name: check for name, check in checks.items() if fnmatch.fnmatchcase(name, pattern.replace("[", "[[]"))}


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
        first = matching(checks, c.fails[0])
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
    targeted = {n: check for p in patterns for n, check in matching(run.checks, p).items()}
    wrong = {n: check for n, check in targeted.items() if check["outcome"] != "passed"}
    assert not wrong, f"without a fault these checks must pass ({run.seconds:.0f} s):\n{_summary(wrong)}"


@NEEDS_VLLM
def test_one_fault_gets_one_fingerprint_whatever_its_symptom(proxies, tmp_path):
    """A fault whose symptom timing decides fails its check with the same fingerprint either way:
    the run that saw one symptom, gated on the run that saw the other, passes (no false regression)."""
    from pytest_vllm import gate

    proxy, server = proxies(CHAT)
    check = "test_concurrency.py::test_simultaneous_streams_are_each_complete"
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
    modules = {path.stem.removeprefix("test_") for path in suites_path().glob("test_*.py")}
    assert modules == {c.module for c in CASES}, "every suite module needs a fault that fails it"


def suites_path() -> Path:
    from pytest_vllm.cli import suites_dir

    return suites_dir()


if __name__ == "__main__":  # the table, for a note: python tests/test_faults.py
    print(_table())
