"""Proof that every check can fail: the shipped suites through a fault-injecting proxy, against real vLLM.

Four real vLLM servers (the embedded default's fixture models: tiny-chat launched with an API
key, LoRA adapters and hermes tools; tiny-vision; minilm-embed; minilm-rerank) stand behind
tests/fault_proxy.py. For each suite module, one or more realistic faults from tests/faults.py
(a bug of the kind real servers and gateways ship) make named checks of that module FAIL, and
the failure says what broke; through the same proxy with no fault the same checks PASS. A fault
that turned a check unsupported, or an error, would not count: the outcome must be `failed`.

The suites run as a user runs them, in a subprocess against the proxy's URL: a fault's run
collects only its module (`python -m pytest <installed suites>/test_<module>.py --vllm-url ...
-k ...`, 2.5 s a run cheaper than collecting all 335 checks), the no-fault run of each server
is `python -m pytest_vllm --vllm-url ... -k <every targeted check>`. Each fault listens on a
port of its own, so runs overlap (`PYTEST_VLLM_FAULT_JOBS`, default 2); a server's runs start
as soon as it is ready. `PYTEST_VLLM_FAULT_SERVERS=servers.json` points the module at servers
already running instead of launching them (for development). `python tests/test_faults.py`
prints this table:

{table}
"""

from __future__ import annotations

import fnmatch
import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import faults
from fault_proxy import FaultProxy

NEEDS_VLLM = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed here")
# Set to a JSON file {"tiny-chat": {"url": ..., "api_key": ...}, ...} to test servers already running
# (development: keeps the servers up between runs). Unset: this module launches them.
SERVERS_FILE = os.environ.get("PYTEST_VLLM_FAULT_SERVERS")  # read now: conftest clears PYTEST_VLLM_* per test
CHAT, VISION, EMBED, RERANK = "tiny-chat", "tiny-vision", "minilm-embed", "minilm-rerank"
API_KEY = "pytest-vllm-faults-key"
RUN_TIMEOUT = 300
JOBS = int(os.environ.get("PYTEST_VLLM_FAULT_JOBS", "2"))  # runs at a time


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


def case(module, fault, server, select, *fails, reason=""):
    return Case(module, fault, server, select, tuple(f"test_{module}.py::{f}" for f in fails), reason)


CASES = [
    case("auth", "any-bearer-key-accepted", CHAT, "wrong-key",
         "test_without_the_right_key_is_401[wrong-key-*]", reason="must be refused with 401"),
    case("auth", "any-bearer-key-accepted", CHAT, "test_sdk_raises_authentication_error",
         "test_sdk_raises_authentication_error", reason="AuthenticationError"),
    case("auth", "metrics-behind-the-key", CHAT, "test_path_open_without_a_key",
         "test_path_open_without_a_key[metrics]", reason="stays open"),
    case("chat", "max_completion_tokens-ignored", CHAT, "test_length_limit_is_exact_with_ignore_eos",
         "test_length_limit_is_exact_with_ignore_eos[max_completion_tokens]", reason="caps the completion"),
    case("chat", "stop-ignored", CHAT, "test_stop_string", "test_stop_string[*]", reason="holds the stop string"),
    case("chat", "n-ignored", CHAT, "test_n_choices", "test_n_choices", reason="n=3 gives choices"),
    case("chat", "system-message-dropped", CHAT, "test_system_prompt_and_earlier_turns_reach_the_model",
         "test_system_prompt_and_earlier_turns_reach_the_model", reason="each adds prompt tokens"),
    case("chat", "completion_tokens-off-by-one", CHAT, "test_conversation_answers_as_assistant",
         "test_conversation_answers_as_assistant[*]", reason="completion tokens for max_tokens"),
    case("chat", "chat-logprobs-in-completions-format", CHAT, "test_logprobs_structure",
         "test_logprobs_structure[*]", reason="not the completions format"),
    case("completions", "echo-ignored", CHAT, "test_echo_prepends_the_prompt",
         "test_echo_prepends_the_prompt", reason="with echo"),
    case("completions", "seed-ignored", CHAT, "test_same_request_same_text",
         "test_same_request_same_text[seeded]", reason="reproducible"),
    case("classify", "classify-use_activation-ignored", RERANK, "test_use_activation_false_gives_the_logits",
         "test_use_activation_false_gives_the_logits", reason="use_activation=false gives the logits"),
    case("completions", "stop_reason-dropped", CHAT, "test_stop_token_ids", "test_stop_token_ids",
         reason="stop_reason"),
    case("completions", "logit_bias-ignored", CHAT, "test_logit_bias_forces_a_token",
         "test_logit_bias_forces_a_token", reason="logit_bias +100"),
    case("completions", "min_tokens-ignored", CHAT, "test_min_tokens_defers_stopping",
         "test_min_tokens_defers_stopping", reason="min_tokens=4"),
    case("completions", "batch-choices-all-index-0", CHAT, "test_prompt_list_keeps_order_and_index",
         "test_prompt_list_keeps_order_and_index", reason="index"),
    case("completions", "prompt_tokens-off-by-one", CHAT, "test_usage_arithmetic",
         "test_usage_arithmetic[*]", reason="prompt_tokens should equal"),
    case("embeddings", "embedding-dimensions-ignored", EMBED, "test_dimensions_shortens_the_vector",
         "test_dimensions_shortens_the_vector", reason="gives a vector of"),
    case("embeddings", "embedding-base64-float64", EMBED, "test_base64_decodes_to_the_floats",
         "test_base64_decodes_to_the_floats", reason="little-endian float32"),
    case("embeddings", "embedding-batch-out-of-order", EMBED, "test_list_input_keeps_order_and_index",
         "test_list_input_keeps_order_and_index", reason="as embedded alone"),
    case("embeddings", "rerank-sorted-ascending", EMBED, "test_rerank_orders_and_limits",
         "test_rerank_orders_and_limits", reason="sorted by relevance_score"),
    case("errors", "400-answered-as-500", CHAT, "test_invalid_request_is_rejected and temperature",
         "test_invalid_request_is_rejected[chat-temperature-*]", reason="never 500"),
    case("errors", "out-of-range-clamped", CHAT, "test_invalid_request_is_rejected and (temperature or top_p)",
         "test_invalid_request_is_rejected[chat-temperature-below-0]",
         "test_invalid_request_is_rejected[chat-temperature-above-2]",
         "test_invalid_request_is_rejected[chat-top_p-*]", reason="got 200"),
    case("errors", "flat-error-body", CHAT, "test_rejection_has_openai_error_envelope and temperature",
         "test_rejection_has_openai_error_envelope[chat-temperature-*]", reason="an OpenAI error body"),
    case("errors", "405-answered-as-404", CHAT, "test_unknown_route_or_method",
         "test_unknown_route_or_method[GET-/v1/chat/completions]", "test_unknown_route_or_method[DELETE-/v1/models]",
         reason="the wrong method 405"),
    case("fuzz", "400-answered-as-500", CHAT, "test_schema_shaped_bodies_are_served_or_refused",
         "test_schema_shaped_bodies_are_served_or_refused[completions]",
         "test_schema_shaped_bodies_are_served_or_refused[chat]",
         "test_schema_shaped_bodies_are_served_or_refused[responses]", reason="never 500"),
    case("fuzz", "400-answered-as-500", CHAT, "test_arbitrary_sampling_params_never_cause_a_server_error",
         "test_arbitrary_sampling_params_never_cause_a_server_error[*]", reason="never 500"),
    case("health", "health-json-body", CHAT, "test_health_is_200_with_empty_body",
         "test_health_is_200_with_empty_body", reason="body should be empty"),
    case("health", "version-dev", CHAT, "test_version_is_a_version_string",
         "test_version_is_a_version_string", reason="'X.Y...'"),
    case("lora", "lora-adapter-not-applied", CHAT, "test_adapter_serves_its_requests",
         "test_adapter_serves_its_requests", reason="should change the model's greedy output"),
    case("lora", "runtime-lora-not-listed", CHAT, "test_runtime_load_and_unload",
         "test_runtime_load_and_unload[v1]", "test_runtime_load_and_unload[adapters]", reason="is listed in /v1/models"),
    case("lora", "runtime-lora-not-listed", CHAT, "test_random_lifecycles_keep_the_adapters_state",
         "test_random_lifecycles_keep_the_adapters_state[*]", reason="loaded are"),
    case("lora", "unknown-model-falls-back", CHAT, "test_unknown_adapter_is_404",
         "test_unknown_adapter_is_404", reason="should be 404"),
    case("metrics", "metric-renamed", CHAT, "test_vllm_metric_is_exposed and prompt_tokens",
         "test_vllm_metric_is_exposed[vllm:prompt_tokens]", reason="vLLM exposes vllm:prompt_tokens"),
    case("metrics", "metrics-stale", CHAT, "test_counters_move_after_a_completion",
         "test_counters_move_after_a_completion", reason="each counter grows"),
    case("models", "models-created-as-string", CHAT, "test_models_list_matches_openai_schema",
         "test_models_list_matches_openai_schema", reason="created"),
    case("models", "models-max_model_len-missing", CHAT, "test_model_entries_carry_vllm_extras",
         "test_model_entries_carry_vllm_extras", reason="max_model_len"),
    case("schema", "stream-created-as-string", CHAT, "test_response_matches_openai_schema and chat-stream",
         "test_response_matches_openai_schema[chat-stream]",
         "test_response_matches_openai_schema[chat-stream-usage]", reason="created"),
    case("routes", "batch-choices-all-index-0", CHAT, "test_chat_batch_answers_each_conversation",
         "test_chat_batch_answers_each_conversation", reason="one choice per conversation"),
    case("sampling", "always-greedy", CHAT, "test_seed_repeats_and_other_seeds_differ",
         "test_seed_repeats_and_other_seeds_differ", reason="all gave the same text"),
    case("sampling", "top_k-ignored", CHAT, "test_keeping_only_the_likeliest_token_is_greedy and top_k",
         "test_keeping_only_the_likeliest_token_is_greedy[top_k=1]", reason="keeps only the likeliest token"),
    case("sampling", "allowed_token_ids-ignored", CHAT, "test_allowed_token_ids_confine_every_token",
         "test_allowed_token_ids_confine_every_token", reason="confines every token"),
    case("sampling", "beam-search-ignored", CHAT, "test_beam_search",
         "test_beam_search_of_width_one_is_greedy", "test_beam_search_beams_are_distinct", reason="beam"),
    case("sampling", "stream_interval-ignored", CHAT, "test_stream_interval_puts_that_many_tokens_in_a_chunk",
         "test_stream_interval_puts_that_many_tokens_in_a_chunk", reason="chunks"),
    case("sampling", "request_id-dropped", CHAT, "test_request_id_names_the_response",
         "test_request_id_names_the_response", reason="names the request"),
    case("sampling", "chat_template-ignored", CHAT, "test_request_chat_template_is_refused_or_applied",
         "test_request_chat_template_is_refused_or_applied", reason="accepted but not applied"),
    case("sampling", "penalties-ignored", CHAT, "test_penalties_lower_what_was_generated",
         "test_penalties_lower_what_was_generated[frequency]", "test_penalties_lower_what_was_generated[presence]",
         reason="scores higher after the penalty"),
    case("sampling", "logit_bias-ignored", CHAT, "test_logit_bias_minus_100_forbids_a_token",
         "test_logit_bias_minus_100_forbids_a_token", reason="forbids it"),
    case("concurrency", "concurrent-answers-crossed", CHAT, "test_concurrent_greedy_answers",
         "test_concurrent_greedy_answers_leave_the_sequential_ones_only_at_near_ties", reason="where the model was sure"),
    case("concurrency", "sse-done-missing", CHAT, "test_simultaneous_streams_are_each_complete",
         "test_simultaneous_streams_are_each_complete", reason="[DONE]"),
    case("concurrency", "streams-broken-under-load", CHAT, "test_simultaneous_streams_are_each_complete",
         "test_simultaneous_streams_are_each_complete", reason="incomplete chunked read"),
    case("responses", "tool-strict-dropped", CHAT, "test_required_tool_choice_calls_a_listed_function",
         "test_required_tool_choice_calls_a_listed_function", reason="follow the strict tool's schema"),
    case("responses", "responses-events-unnumbered", CHAT, "test_stream_events_are_ordered_and_join_to_the_text",
         "test_stream_events_are_ordered_and_join_to_the_text", reason="sequence_number counts the events"),
    case("messages", "tool-strict-dropped", CHAT, "test_tool_choice_any_calls_a_listed_tool",
         "test_tool_choice_any_calls_a_listed_tool", reason="follows the tool's input_schema"),
    case("messages", "messages-stop_reason-null", CHAT, "test_message_is_an_assistant_text_reply",
         "test_message_is_an_assistant_text_reply", reason="ends its turn or at max_tokens"),
    case("streaming", "sse-done-missing", CHAT, "test_chunks_share_id_created_and_object",
         "test_chunks_share_id_created_and_object[*]", reason="[DONE]"),
    case("streaming", "sse-single-newline-framing", CHAT, "test_chunks_share_id_created_and_object",
         "test_chunks_share_id_created_and_object[*]", reason="blank line"),
    case("streaming", "stream-usage-on-every-chunk", CHAT, "test_include_usage_adds_one_final_usage_chunk",
         "test_include_usage_adds_one_final_usage_chunk[*]", reason="only the final chunk carries usage"),
    case("streaming", "stream-role-in-every-delta", CHAT, "test_chat_role_comes_in_the_first_delta",
         "test_chat_role_comes_in_the_first_delta[*]", reason="later deltas don't"),
    case("streaming", "stream-first-token-lost", CHAT, "test_stream_joins_to_the_non_streamed_answer",
         "test_stream_joins_to_the_non_streamed_answer[*]", reason="must equal the non-streamed answer"),
    case("structured_outputs", "structured-outputs-not-enforced", CHAT,
         "(test_invalid_constraint_is_rejected or test_output_meets_its_constraint) and (regex or choice)",
         "test_invalid_constraint_is_rejected[*]", "test_output_meets_its_constraint[structured_outputs-regex-*]",
         "test_output_meets_its_constraint[structured_outputs-choice-*]",
         reason="must be refused with a 4xx"),
    case("tokenize", "tokenize-count-off-by-one", CHAT, "test_count_and_max_model_len",
         "test_count_and_max_model_len", reason="count is the number of tokens"),
    case("tokenize", "detokenize-drops-a-character", CHAT, "test_round_trip",
         "test_round_trip[*]", reason="tokenizes to the same tokens"),
    case("tokenize", "tokenize-messages-without-generation-prompt", CHAT, "test_messages_count_matches_chat_usage",
         "test_messages_count_matches_chat_usage", reason="same chat template"),
    case("tools", "tool-calls-not-parsed", CHAT, "test_required_calls_a_tool",
         "test_required_calls_a_tool[*]", reason="answered with no tool call"),
    case("tools", "truncated-call-finishes-tool_calls", CHAT, "test_call_cut_by_max_tokens_finishes_with_length",
         "test_call_cut_by_max_tokens_finishes_with_length[*]", reason="must be 'length'"),
    case("tools", "streamed-tool-arguments-null", CHAT, "test_streamed_calls_join_to_the_non_streamed_calls",
         "test_streamed_calls_join_to_the_non_streamed_calls[*]", reason="malformed tool calls"),
    case("vision", "image-parts-dropped", VISION, "test_image_part_is_answered or test_image_changes_the_output",
         "test_image_part_is_answered[png+text]", "test_image_changes_the_output", reason="image"),
    case("vision", "400-answered-as-500", VISION, "test_bad_image_content_is_4xx",
         "test_bad_image_content_is_4xx[corrupt-image]", reason="refused with a 4xx"),
]
SERVERS = (CHAT, VISION, EMBED, RERANK)


def _table() -> str:
    rows = ["| suite module | fault | a check it makes fail | the real-world bug it imitates |", "|---|---|---|---|"]
    for c in CASES:
        check = c.fails[0].split("::", 1)[1]
        rows.append(f"| test_{c.module}.py | `{c.fault}` | `{check}` | {faults.describe(c.fault)} |")
    return "\n".join(rows)


__doc__ = __doc__.format(table=_table())


class Upstreams:
    """The real servers: each launched (in a thread of its own) when first asked for, stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: dict[str, dict] = {}
        self.errors: dict[str, BaseException] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._launched = []
        self._launcher = None
        self._lock = threading.Lock()

    def get(self, name: str) -> dict:
        """`{"url", "api_key", "model", "adapters"}` of the server for `name`, once it is ready."""
        with self._lock:
            if name not in self._threads and name not in self.servers:
                self._start(name)
        if name in self._threads:
            self._threads[name].join()
        if name in self.errors:
            pytest.fail(f"the {name} server could not be had: {self.errors[name]}", pytrace=False)
        return self.servers[name]

    def _start(self, name: str) -> None:
        if SERVERS_FILE:
            server = json.loads(Path(SERVERS_FILE).read_text())[name]
            adapters = _adapters(server["url"], server.get("api_key"))
            self.servers[name] = {"model": name, **server, "adapters": adapters}
            return
        if self._launcher is None:
            from pytest_vllm.launchers import SubprocessLauncher

            self._launcher = SubprocessLauncher(None, request_timeout=120)
        self._threads[name] = threading.Thread(target=self._launch, args=(name,), daemon=True)
        self._threads[name].start()

    def _launch(self, name: str) -> None:
        from pytest_vllm import fixture_models
        from pytest_vllm.launchers import ServerSpec
        from pytest_vllm.session import EMBEDDED_ENV

        try:
            path = fixture_models.build(name)
            key = API_KEY if name == CHAT else None
            args = tuple(fixture_models.serve_args(name, path))
            spec = ServerSpec(str(path), name, args, EMBEDDED_ENV, api_key=key)
            server = self._launcher.start(spec, self.workdir, timeout=900)
            self._launched.append(server)
            self.servers[name] = {"url": server.base_url, "api_key": key, "model": name,
                                  "adapters": _adapters(server.base_url, key)}
        except BaseException as error:  # noqa: BLE001 - reported by get() in the test that needs it
            self.errors[name] = error

    def stop(self) -> None:
        for thread in self._threads.values():
            thread.join()
        for server in self._launched:
            self._launcher.stop(server)


def _adapters(url: str, api_key: str | None) -> tuple[str, ...]:
    """The LoRA adapters the server lists (entries of /v1/models with a parent)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    data = httpx.get(f"{url}/v1/models", headers=headers, timeout=30).json()["data"]
    return tuple(entry["id"] for entry in data if entry.get("parent"))


@pytest.fixture(scope="module")
def upstreams(real_vllm_turn, tmp_path_factory):
    ups = Upstreams(tmp_path_factory.mktemp("fault-servers"))
    yield ups
    ups.stop()


@pytest.fixture(scope="module")
def proxies(upstreams):
    """`proxies(name)`: the FaultProxy in front of server `name` (and that server's description)."""
    made: dict[str, FaultProxy] = {}
    lock = threading.Lock()

    def get(name):
        server = upstreams.get(name)
        with lock:
            if name not in made:
                made[name] = FaultProxy(server["url"])
        return made[name], server

    yield get
    for proxy in made.values():
        proxy.close()


@dataclass
class Run:
    checks: dict[str, dict]
    output: str
    seconds: float


def run_suites(url: str, server: dict, keyword: str, folder: Path, module: str | None = None) -> Run:
    """The shipped suites against `url`, selecting `keyword`: the records by check name.

    As a user runs them: `python -m pytest_vllm -k ...` (all suites collected), or, for one suite
    module, `python -m pytest <the installed suites>/test_<module>.py` (the plugin loads from its
    entry point; collecting one module instead of all saves about 2.5 s a run).
    """
    from pytest_vllm.cli import suites_dir

    started = time.monotonic()
    report = folder / "report.json"
    if module is None:
        argv = [sys.executable, "-m", "pytest_vllm"]
    else:
        argv = [sys.executable, "-m", "pytest", str(suites_dir() / f"test_{module}.py"), "-p", "no:cacheprovider"]
    argv += ["--vllm-url", url, "--vllm-model", server["model"], "-k", keyword, "--vllm-report", str(report),
             "-p", "no:randomly", "--hypothesis-seed=0"]
    env = dict(os.environ)
    if server.get("api_key"):
        env["PYTEST_VLLM_API_KEY"] = server["api_key"]  # not on the command line
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=folder, env=env)
    output = done.stdout[-4000:] + done.stderr[-2000:]
    assert report.exists(), f"the run wrote no results file:\n{output}"
    checks = json.loads(report.read_text())["checks"]
    by_name = {check["nodeid"].split("suites/")[-1]: check for check in checks}
    return Run(by_name, output, time.monotonic() - started)


class Runs:
    """Every selected run of this module on a pool of `JOBS` threads (each run is a subprocess,
    mostly waiting on a server). A server's runs are queued, in collection order, once it is ready,
    so a server still starting holds up no other's; a test waits for its own run."""

    def __init__(self, proxies, folder: Path, items: list[pytest.Item]) -> None:
        self.proxies, self.folder = proxies, folder
        self.pool = ThreadPoolExecutor(JOBS, thread_name_prefix="fault-run")
        self.futures: dict[str, Future] = {}
        queued: dict[str, list] = {}
        for item in items:
            params = getattr(item, "callspec", None)
            if params is not None and "c" in params.params:
                c = params.params["c"]
                queued.setdefault(c.server, []).append((c.id, self._fault_run(c)))
            elif params is not None and "name" in params.params:
                name = params.params["name"]
                queued.setdefault(name, []).append((f"no-fault-{name}", self._clean_run(name)))
        for server, jobs in queued.items():  # the servers start together, each when its queue asks
            for key, _ in jobs:
                self.futures[key] = Future()
            threading.Thread(target=self._queue, args=(server, jobs), daemon=True).start()

    def _queue(self, server: str, jobs: list) -> None:
        try:
            self.proxies(server)  # waits until the server is ready
        except BaseException as error:  # noqa: BLE001 - each of its tests reports it
            for key, _ in jobs:
                self.futures[key].set_exception(error)
            return
        for key, job in jobs:
            try:
                self.pool.submit(self._settle, self.futures[key], job)
            except RuntimeError:  # the module ended (e.g. -x) while this server was starting
                return

    @staticmethod
    def _settle(future: Future, job) -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(job())
            except BaseException as error:  # noqa: BLE001 - raised again in the test that waits
                future.set_exception(error)

    def _fault_run(self, c: Case):
        def run():
            proxy, server = self.proxies(c.server)
            fault = faults.make(c.fault, faults.Setup(server["model"], server.get("api_key"), server["adapters"]))
            return run_suites(proxy.url(fault), server, c.select, self._folder(c.id), c.module)

        return run

    def _clean_run(self, name: str):
        def run():
            proxy, server = self.proxies(name)
            keyword = " or ".join(f"({c.keyword})" for c in CASES if c.server == name)
            return run_suites(proxy.url(None), server, keyword, self._folder(f"no-fault-{name}"))

        return run

    def _folder(self, name: str) -> Path:
        folder = self.folder / "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        folder.mkdir()
        return folder

    def result(self, key: str) -> Run:
        return self.futures[key].result()

    def close(self) -> None:
        for future in self.futures.values():
            future.cancel()  # those not started yet
        self.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def runs(request, proxies, tmp_path_factory):
    items = [item for item in request.session.items if item.module is request.module]
    all_runs = Runs(proxies, tmp_path_factory.mktemp("fault-runs"), items)
    yield all_runs
    all_runs.close()


def matching(checks: dict[str, dict], pattern: str) -> dict[str, dict]:
    return {name: check for name, check in checks.items() if fnmatch.fnmatchcase(name, pattern.replace("[", "[[]"))}


def _text(check: dict) -> str:
    """What a record says of its outcome (`reason` and `details`; older files: `message`)."""
    return "\n".join(check.get(key) or "" for key in ("reason", "details", "message"))


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
        run = run_suites(proxy.url(fault), server, check.split("::")[1], folder, "concurrency")
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


# The proxy itself, against a stand-in upstream (no vLLM needed)


class _Upstream(http.server.BaseHTTPRequestHandler):
    """POST: an SSE stream of the request body's `n` events, the second sent only once `gate` is set."""

    gate = threading.Event()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for number in range(body["n"]):
            if number == 1 and not self.gate.wait(10):
                return
            self.wfile.write(f"data: {json.dumps({'number': number, 'seen': body})}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Upstream.gate.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Upstream.gate.set()
    server.shutdown()


class _Renumber(faults.ChunkFault):
    """Test fault: doubles each chunk's number and drops the request's `drop` field."""

    def request(self, req):
        req.fields().pop("drop", None)

    def chunk(self, req, chunk):
        chunk["number"] *= 2


@pytest.mark.parametrize("fault", [None, _Renumber()], ids=["no-fault", "fault"])
def test_proxy_passes_each_event_on_as_it_comes(upstream, fault):
    import httpx

    with FaultProxy(upstream) as proxy:
        url = proxy.url(fault)
        with httpx.stream("POST", url + "/v1/x", json={"n": 3, "drop": 1}, timeout=20) as response:
            lines = response.iter_lines()
            first = json.loads(next(line for line in lines if line)[len("data: "):])
            _Upstream.gate.set()  # the upstream sends the rest only after the client has the first event
            rest = [line for line in lines if line]
    assert response.headers["content-type"] == "text/event-stream"
    numbers = [first["number"]] + [json.loads(line[len("data: "):])["number"] for line in rest[:-1]]
    assert numbers == ([0, 1, 2] if fault is None else [0, 2, 4]) and rest[-1] == "data: [DONE]"
    assert ("drop" in first["seen"]) == (fault is None), f"the request as the upstream saw it: {first['seen']}"


if __name__ == "__main__":  # the table, for a note: python tests/test_faults.py
    print(_table())
