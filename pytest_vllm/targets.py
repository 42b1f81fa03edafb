"""Which checks each fault of the catalogue (faults.py) must make fail: what `--vllm-prove` runs.

A row names a fault and the checks it targets, as fnmatch patterns of check ids (report.check_id:
`suites/test_chat.py::test_stop_string[*]`). A check that passed is proved on its server when a fault
that targets it makes it fail there. tests/test_faults.py shows every row on real vLLM: the fault
makes the checks fail, and they pass without it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """Fault `fault` must make each check matching one of `checks` (patterns of check ids) fail."""

    module: str  # the suite module of the checks: `chat` for suites/test_chat.py
    fault: str
    checks: tuple[str, ...]


def target(module: str, fault: str, *checks: str) -> Target:
    """`fault` targets `checks`, patterns of the names of suites/test_<module>.py's checks."""
    return Target(module, fault, tuple(f"suites/test_{module}.py::{check}" for check in checks))


def matches(check: str, pattern: str) -> bool:
    """Whether check id `check` matches fnmatch `pattern` (whose `[` is literal: ids hold parameters)."""
    return fnmatch.fnmatchcase(check, pattern.replace("[", "[[]"))


# One row a line: target(suite module, fault, the checks it makes fail).
# fmt: off
TARGETS: tuple[Target, ...] = (
    target("auth", "any-bearer-key-accepted", "test_without_the_right_key_is_401[wrong-key-*]"),
    target("auth", "any-bearer-key-accepted", "test_sdk_raises_authentication_error"),
    target("auth", "metrics-behind-the-key", "test_path_open_without_a_key[metrics]"),
    target("chat", "max_completion_tokens-ignored", "test_length_limit_is_exact_with_ignore_eos[max_completion_tokens]"),
    target("chat", "stop-ignored", "test_stop_string[*]"),
    target("chat", "n-ignored", "test_n_choices"),
    target("chat", "system-message-dropped", "test_system_prompt_and_earlier_turns_reach_the_model"),
    target("chat", "completion_tokens-off-by-one", "test_conversation_answers_as_assistant[*]"),
    target("chat", "chat-logprobs-in-completions-format", "test_logprobs_structure[*]"),
    target("completions", "echo-ignored", "test_echo_prepends_the_prompt"),
    target("completions", "seed-ignored", "test_same_request_same_text[seeded]"),
    target("classify", "classify-use_activation-ignored", "test_use_activation_false_gives_the_logits"),
    target("completions", "stop_reason-dropped", "test_stop_token_ids"),
    target("completions", "stop-ignored", "test_stop_string[*]"),
    target("completions", "logit_bias-ignored", "test_logit_bias_forces_a_token"),
    target("completions", "min_tokens-ignored", "test_min_tokens_defers_stopping"),
    target("completions", "batch-choices-all-index-0", "test_prompt_list_keeps_order_and_index"),
    target("completions", "prompt_tokens-off-by-one", "test_usage_arithmetic[*]"),
    target("embeddings", "embedding-dimensions-ignored", "test_dimensions_shortens_the_vector"),
    target("embeddings", "embedding-base64-float64", "test_base64_decodes_to_the_floats"),
    target("embeddings", "embedding-batch-out-of-order", "test_list_input_keeps_order_and_index"),
    target("embeddings", "rerank-sorted-ascending", "test_rerank_orders_and_limits"),
    target("errors", "400-answered-as-500", "test_invalid_request_is_rejected[*]"),
    target("errors", "out-of-range-clamped", "test_invalid_request_is_rejected[chat-temperature-below-0]", "test_invalid_request_is_rejected[chat-temperature-above-2]", "test_invalid_request_is_rejected[chat-top_p-*]"),
    target("errors", "flat-error-body", "test_rejection_has_openai_error_envelope[*]"),
    target("errors", "405-answered-as-404", "test_unknown_route_or_method[GET-/v1/chat/completions]", "test_unknown_route_or_method[DELETE-/v1/models]"),
    target("fuzz", "400-answered-as-500", "test_schema_shaped_bodies_are_served_or_refused[completions]", "test_schema_shaped_bodies_are_served_or_refused[chat]", "test_schema_shaped_bodies_are_served_or_refused[responses]"),
    target("fuzz", "400-answered-as-500", "test_arbitrary_sampling_params_never_cause_a_server_error[*]"),
    target("health", "health-json-body", "test_health_is_200_with_empty_body"),
    target("health", "version-dev", "test_version_is_a_version_string"),
    target("lora", "lora-adapter-not-applied", "test_adapter_serves_its_requests"),
    target("lora", "runtime-lora-not-listed", "test_runtime_load_and_unload[v1]", "test_runtime_load_and_unload[adapters]"),
    target("lora", "runtime-lora-not-listed", "test_random_lifecycles_keep_the_adapters_state[*]"),
    target("lora", "unknown-model-falls-back", "test_unknown_adapter_is_404"),
    target("metrics", "metric-renamed", "test_vllm_metric_is_exposed[vllm:prompt_tokens]"),
    target("metrics", "metrics-stale", "test_counters_move_after_a_completion"),
    target("models", "models-created-as-string", "test_models_list_matches_openai_schema"),
    target("models", "models-max_model_len-missing", "test_model_entries_carry_vllm_extras"),
    target("schema", "stream-created-as-string", "test_response_matches_openai_schema[chat-stream]", "test_response_matches_openai_schema[chat-stream-usage]"),
    target("routes", "batch-choices-all-index-0", "test_chat_batch_answers_each_conversation"),
    target("sampling", "always-greedy", "test_seed_repeats_and_other_seeds_differ"),
    target("sampling", "top_k-ignored", "test_keeping_only_the_likeliest_token_is_greedy[top_k=1]"),
    target("sampling", "allowed_token_ids-ignored", "test_allowed_token_ids_confine_every_token"),
    target("sampling", "beam-search-ignored", "test_beam_search_of_width_one_is_greedy", "test_beam_search_beams_are_distinct"),
    target("sampling", "stream_interval-ignored", "test_stream_interval_puts_that_many_tokens_in_a_chunk"),
    target("sampling", "request_id-dropped", "test_request_id_names_the_response"),
    target("sampling", "chat_template-ignored", "test_request_chat_template_is_refused_or_applied"),
    target("sampling", "penalties-ignored", "test_penalties_overturn_a_repeated_token[*]"),
    target("sampling", "ignore_eos-dropped", "test_ignore_eos_generates_past_a_forced_eos"),
    target("sampling", "skip_special_tokens-dropped", "test_skip_special_tokens_false_keeps_them_in_the_text"),
    target("sampling", "logit_bias-ignored", "test_logit_bias_minus_100_forbids_a_token"),
    target("concurrency", "concurrent-answers-crossed", "test_concurrent_greedy_answers_leave_the_sequential_ones_only_at_near_ties"),
    target("concurrency", "sse-done-missing", "test_simultaneous_streams_are_each_complete"),
    target("concurrency", "streams-broken-under-load", "test_simultaneous_streams_are_each_complete"),
    target("perf", "streams-broken-under-load", "test_serving_under_load[short]"),
    target("parity", "logprobs-of-processed-logits", "test_greedy_tokens_match_transformers[*]"),
    target("responses", "tool-strict-dropped", "test_required_tool_choice_calls_a_listed_function"),
    target("responses", "responses-events-unnumbered", "test_stream_events_are_ordered_and_join_to_the_text"),
    target("responses", "responses-status-rewritten", "test_a_response_cut_by_max_output_tokens_is_incomplete", "test_a_response_that_finished_is_completed"),
    target("messages", "tool-strict-dropped", "test_tool_choice_any_calls_a_listed_tool"),
    target("messages", "messages-stop_reason-null", "test_message_is_an_assistant_text_reply"),
    target("streaming", "sse-done-missing", "test_chunks_share_id_created_and_object[*]"),
    target("streaming", "sse-single-newline-framing", "test_chunks_share_id_created_and_object[*]"),
    target("streaming", "stream-usage-on-every-chunk", "test_include_usage_adds_one_final_usage_chunk[*]"),
    target("streaming", "stream-role-in-every-delta", "test_chat_role_comes_in_the_first_delta[*]"),
    target("streaming", "stream-first-token-lost", "test_stream_joins_to_the_non_streamed_answer[*]"),
    target("structured_outputs", "structured-outputs-not-enforced", "test_invalid_constraint_is_rejected[*]", "test_output_meets_its_constraint[structured_outputs-regex-*]", "test_output_meets_its_constraint[structured_outputs-choice-*]"),
    target("tokenize", "tokenize-count-off-by-one", "test_count_and_max_model_len"),
    target("tokenize", "detokenize-drops-a-character", "test_round_trip[*]"),
    target("tokenize", "tokenize-messages-without-generation-prompt", "test_messages_count_matches_chat_usage"),
    target("tools", "tool_choice-none-as-auto", "test_none_makes_no_call"),
    target("tools", "tool-calls-not-parsed", "test_required_calls_a_tool[*]"),
    target("tools", "truncated-call-finishes-tool_calls", "test_call_cut_by_max_tokens_finishes_with_length[*]"),
    target("tools", "streamed-tool-arguments-null", "test_streamed_calls_join_to_the_non_streamed_calls[*]"),
    target("vision", "image-parts-dropped", "test_image_part_is_answered[png+text]", "test_image_changes_the_output"),
    target("vision", "400-answered-as-500", "test_bad_image_content_is_4xx[corrupt-image]"),
)
# fmt: on
