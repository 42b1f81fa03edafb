"""Each sampling parameter checked for its effect, with properties that hold for any model.

Greedy decoding (temperature 0) is the reference: `top_k=1`, a tiny `top_p` and `min_p=1` keep
only the likeliest token, so at temperature 1 they must give the greedy text whatever the seed.
A seed repeats a sampled answer; other seeds, and the choices of n > 1, differ from each other
(at temperature 1.5 over 16 tokens, equal texts mean the sampling was ignored). `logit_bias`
-100 and `bad_words` forbid the greedy first token, `allowed_token_ids` confines every token,
`truncate_prompt_tokens` shows in usage, `prompt_logprobs` scores each prompt token. The presence
and frequency penalties and `ignore_eos` are checked on a witness, a case built so that the field
must change the answer on the model under test: a token forced to repeat until, by the raw
logprobs (vLLM's default `--logprobs-mode raw_logprobs`), the penalty must overturn it at a known
step; the end-of-turn token forced, so that only `ignore_eos` lets generation go on (and only
`skip_special_tokens=false` writes it). Tokens are
compared by id, never by text. The chat
template flags (`add_generation_prompt`, `continue_final_message`, chat `echo`) change the
prompt exactly as /tokenize renders it. `suffix`, `best_of` and a request's own `chat_template`
may be refused, never ignored. vLLM's beam search of width one is greedy whatever the
temperature, and wider beams are distinct; `stream_interval` puts that many tokens in a chunk;
`request_id` names the response.
"""

import math

import pytest

from pytest_vllm.checks.answers import agreeing
from pytest_vllm.checks.expect import answered_ok
from pytest_vllm.checks.sse import read_stream
from pytest_vllm.outcomes import Deviation, inconclusive

pytestmark = pytest.mark.vllm_requires("completions")
PROMPT = "Once upon a time"
TOKENS = 16
SAMPLED = {"temperature": 1.5}
SEEDS = (11, 22, 33, 44)
MESSAGES = [{"role": "user", "content": "Tell me a story."}]
PARTIAL = [*MESSAGES, {"role": "assistant", "content": "Once upon a time"}]


@pytest.fixture
def complete(vllm_http, vllm_server):
    """`complete(**fields)`: a /v1/completions answer (200 asserted), greedy and `TOKENS` long unless told."""

    def send(**fields):
        body = {"model": vllm_server.model, "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0, **fields}
        response = vllm_http.post("/v1/completions", json=body)
        answered_ok(response, f"{fields}")
        return response.json()

    return send


@pytest.fixture
def chat(vllm_http, vllm_server):
    """`chat(messages, **fields)`: a /v1/chat/completions answer (200 asserted), greedy, `TOKENS` long."""

    def send(messages, **fields):
        body = {"model": vllm_server.model, "messages": messages, "max_tokens": TOKENS, "temperature": 0, **fields}
        response = vllm_http.post("/v1/chat/completions", json=body)
        answered_ok(response, f"{fields}")
        return response.json()

    return send


def text(body, index=0):
    return body["choices"][index]["text"]


def first_token(complete):
    """The id of the greedy answer's first token."""
    return complete(max_tokens=1, return_token_ids=True)["choices"][0]["token_ids"][0]


def test_seed_repeats_and_other_seeds_differ(complete):
    answers = {seed: text(complete(**SAMPLED, seed=seed)) for seed in SEEDS}
    first, again = agreeing(lambda: (answers[SEEDS[0]], text(complete(**SAMPLED, seed=SEEDS[0]))))
    assert again == first, f"the same seed repeats the sampled text: {again!r} != {answers[SEEDS[0]]!r}"
    assert len(set(answers.values())) > 1, (
        f"temperature {SAMPLED['temperature']} samples: {len(SEEDS)} seeds over {TOKENS} tokens all gave the same text "
        f"{answers[SEEDS[0]]!r}, so the temperature or the seed was ignored"
    )


def test_n_sampled_choices_differ(complete):
    body = complete(**SAMPLED, n=len(SEEDS), seed=SEEDS[0])
    texts = [choice["text"] for choice in body["choices"]]
    assert len(texts) == len(SEEDS) and len(set(texts)) > 1, (
        f"n={len(SEEDS)} at temperature {SAMPLED['temperature']} samples each choice on its own: got {texts}"
    )


@pytest.mark.parametrize(
    "field",
    [
        pytest.param({"top_k": 1}, id="top_k=1", marks=pytest.mark.vllm_requires("vllm_sampling")),
        pytest.param({"top_p": 1e-9}, id="top_p=1e-9"),
        pytest.param({"min_p": 1.0}, id="min_p=1", marks=pytest.mark.vllm_requires("vllm_sampling")),
    ],
)
def test_keeping_only_the_likeliest_token_is_greedy(complete, field):
    """The witness: seeds whose sample at temperature 1 is not the greedy text; with `field` it must be."""
    greedy = text(complete())
    seeds = [seed for seed in SEEDS if text(complete(temperature=1.0, seed=seed)) != greedy][:2]
    if not seeds:
        inconclusive(f"sampling at temperature 1 gives the greedy text {greedy!r} with every seed of {SEEDS}")
    sampled = {seed: text(complete(temperature=1.0, seed=seed, **field)) for seed in seeds}
    assert set(sampled.values()) == {greedy}, (
        f"{field} keeps only the likeliest token, so sampling at temperature 1 gives the greedy text "
        f"{greedy!r} whatever the seed (without it, seeds {seeds} give other texts); got {sampled}"
    )


@pytest.mark.vllm_requires("return_token_ids")
def test_logit_bias_minus_100_forbids_a_token(complete):
    token = first_token(complete)
    body = complete(logit_bias={str(token): -100}, return_token_ids=True)
    ids = body["choices"][0]["token_ids"]
    assert token not in ids, f"logit_bias -100 on token {token} (the greedy first token) forbids it: got {ids}"


@pytest.mark.vllm_requires("vllm_sampling", "return_token_ids")
def test_allowed_token_ids_confine_every_token(complete):
    allowed = sorted(set(complete(return_token_ids=True)["choices"][0]["token_ids"][:3]))
    free = complete(**SAMPLED, seed=SEEDS[0], return_token_ids=True)["choices"][0]["token_ids"]
    if set(free) <= set(allowed):
        inconclusive(f"the same sample without allowed_token_ids keeps to {allowed} already: {free}")
    body = complete(**SAMPLED, seed=SEEDS[0], allowed_token_ids=allowed, return_token_ids=True)
    ids = body["choices"][0]["token_ids"]
    assert ids and set(ids) <= set(allowed), f"allowed_token_ids={allowed} confines every token: got {ids}"


@pytest.mark.vllm_requires("vllm_sampling", "logprobs")
def test_bad_words_forbid_the_greedy_word(complete):
    body = complete(max_tokens=1, logprobs=0)
    word = body["choices"][0]["logprobs"]["tokens"][0]
    if not word.strip() or not word.strip().isalpha():
        pytest.skip(f"the greedy first token {word!r} is not a word, so bad_words cannot name it")
    forbidden = complete(max_tokens=1, logprobs=0, bad_words=[word.strip()])
    got = forbidden["choices"][0]["logprobs"]["tokens"][0]
    assert got.strip() != word.strip(), f"bad_words=[{word.strip()!r}] forbids the greedy first word: got {got!r}"


PENALTIES = {"frequency": (2.0, 0.0), "presence": (0.0, 2.0), "both": (1.0, 1.0)}
PENALISED_TOKENS = 24
TOP_LOGPROBS = 5  # OpenAI's most for /v1/completions
FORCE = 30.0  # a logit_bias under which one token repeats at every step, penalty or not
MARGIN = 0.05  # logprob differences closer than this are near-ties, not evidence


def by_id(complete, **fields):
    """(chosen ids, their raw logprobs, top alternatives {id: logprob}) of a greedy answer, tokens named by id
    (vLLM's return_tokens_as_token_ids: "token_id:N", so tokens that decode alike stay apart)."""
    logprobs = complete(logprobs=TOP_LOGPROBS, return_tokens_as_token_ids=True, **fields)["choices"][0]["logprobs"]
    if not all(token.startswith("token_id:") for token in logprobs["tokens"]):
        raise Deviation(
            f"return_tokens_as_token_ids=true names each logprobs token 'token_id:N': got {logprobs['tokens'][:5]}",
            "return_tokens_as_token_ids ignored",
        )
    return logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"]


def penalty_after(count, frequency, presence):
    return frequency * count + (presence if count else 0.0)


@pytest.mark.vllm_requires("logprobs", "vllm_sampling")
@pytest.mark.parametrize("penalty", PENALTIES)
def test_penalties_overturn_a_repeated_token(complete, eos_fields, penalty):
    """The witness: logit_bias +30 makes the greedy first token T repeat at every step. From those steps'
    raw logprobs (vLLM's default --logprobs-mode) the check computes a smaller bias under which T still
    repeats without a penalty, but the penalty (frequency x times generated + presence if generated)
    must overturn it at a known step; then asks for exactly that, with and without the penalty."""
    frequency, presence = PENALTIES[penalty]
    [first], [raw_first], _ = by_id(complete, max_tokens=1)
    forced, raw, top = by_id(complete, max_tokens=PENALISED_TOKENS, logit_bias={first[9:]: FORCE}, **eos_fields)
    if set(forced) != {first}:
        inconclusive(f"logit_bias +{FORCE} on the greedy first token {first} does not make it repeat: {forced}")
    if abs(raw[0] - raw_first) > MARGIN:
        inconclusive(f"the logprobs include the logit_bias ({raw[0]:.3f} vs {raw_first:.3f} without it), not raw")
    # d[s]: how far the best other token is above T at step s (prefix T^s), on the raw logprobs
    d = [
        max(v for k, v in alternatives.items() if k != first) - own for own, alternatives in zip(raw, top, strict=True)
    ]
    witness = None
    for step in range(1, PENALISED_TOKENS):  # the first step with room for a bias between the bounds
        low = max([d[step]] + [d[s] + penalty_after(s, frequency, presence) for s in range(step)]) + MARGIN
        high = d[step] + penalty_after(step, frequency, presence) - MARGIN
        if low < high:
            witness = step, (low + high) / 2
            break
    if witness is None:
        inconclusive(f"no step where {penalty} penalties must overturn the repeated token {first} (gaps {d})")
    step, bias = witness
    fields = {"max_tokens": step + 1, "logit_bias": {first[9:]: round(bias, 4)}, **eos_fields}
    plain, _, _ = by_id(complete, **fields)
    if plain != [first] * (step + 1):
        inconclusive(f"logit_bias {bias:+.3f} should repeat {first} for {step + 1} steps without a penalty: {plain}")
    penalised, _, _ = by_id(complete, frequency_penalty=frequency, presence_penalty=presence, **fields)
    assert penalised == [first] * step + penalised[step:] and penalised[step] != first, (
        f"frequency_penalty={frequency}, presence_penalty={presence}: with logit_bias {bias:+.3f} the greedy "
        f"token {first} repeats ({plain}); the penalty keeps it for {step} steps (it costs less than its lead) "
        f"and overturns it at step {step} (it costs {penalty_after(step, frequency, presence):.2f}, its lead is "
        f"{bias - d[step]:.2f}): got {penalised}"
    )


EOS_STEPS = 4


@pytest.fixture
def end_of_turn(vllm_http, vllm_server):
    """The id of the token the chat template closes an assistant turn with (inconclusive if none)."""
    turn = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    rendered = []
    for flags in ({"continue_final_message": True}, {}):
        response = vllm_http.post(
            "/tokenize", json={"model": vllm_server.model, "messages": turn, "add_generation_prompt": False, **flags}
        )
        answered_ok(response, f"/tokenize {flags}")
        rendered.append(response.json()["tokens"])
    open_turn, closed_turn = rendered
    if closed_turn[: len(open_turn)] != open_turn or len(closed_turn) == len(open_turn):
        inconclusive(f"the chat template closes no assistant turn with a token after its text: {closed_turn}")
    return closed_turn[len(open_turn)]


@pytest.mark.vllm_requires("vllm_sampling", "chat", "tokenize", "return_token_ids")
def test_ignore_eos_generates_past_a_forced_eos(complete, end_of_turn):
    """The witness: the token the chat template closes an assistant turn with, forced (logit_bias +100),
    ends generation at once; with ignore_eos the answer runs to max_tokens."""
    forced = {"logit_bias": {str(end_of_turn): 100}, "max_tokens": EOS_STEPS, "return_token_ids": True}
    stopped = complete(**forced)["choices"][0]
    if stopped["finish_reason"] != "stop" or len(stopped["token_ids"]) > 1:
        inconclusive(f"token {end_of_turn}, which closes an assistant turn, is not an end of sequence here: {stopped}")
    went_on = complete(**forced, ignore_eos=True)["choices"][0]
    assert (went_on["finish_reason"], len(went_on["token_ids"])) == ("length", EOS_STEPS), (
        f"ignore_eos=true goes on past the end-of-sequence token {end_of_turn} (forced with logit_bias +100, it "
        f"ends the answer at once without ignore_eos): {went_on['finish_reason']!r} after {went_on['token_ids']}"
    )


@pytest.mark.vllm_requires("vllm_sampling", "chat", "tokenize", "return_token_ids")
def test_skip_special_tokens_false_keeps_them_in_the_text(complete, end_of_turn):
    """The witness: the end-of-turn token forced at every step; by default (skip_special_tokens true) a
    special token leaves no text, and skip_special_tokens=false writes it."""
    forced = {"logit_bias": {str(end_of_turn): 100}, "max_tokens": EOS_STEPS, "ignore_eos": True}
    skipped = text(complete(**forced))
    if skipped:
        inconclusive(f"token {end_of_turn}, which closes an assistant turn, is not a special token here: {skipped!r}")
    kept = text(complete(**forced, skip_special_tokens=False))
    assert kept, (
        f"skip_special_tokens=false writes special tokens into the text: {EOS_STEPS} of token {end_of_turn}, which "
        f"leaves no text by default, gave {kept!r}"
    )


@pytest.mark.vllm_requires("vllm_sampling")
def test_truncate_prompt_tokens_shows_in_usage(complete):
    full = complete(max_tokens=1)["usage"]["prompt_tokens"]
    truncated = complete(max_tokens=1, truncate_prompt_tokens=2)["usage"]["prompt_tokens"]
    assert full > 2 and truncated == 2, (
        f"truncate_prompt_tokens=2 keeps the prompt's last 2 tokens ({full} without it): "
        f"usage.prompt_tokens {truncated}"
    )


@pytest.mark.vllm_requires("vllm_sampling")
def test_prompt_logprobs_score_each_prompt_token(complete):
    body = complete(max_tokens=1, prompt_logprobs=1)
    scored = body["choices"][0].get("prompt_logprobs")
    count = body["usage"]["prompt_tokens"]
    assert isinstance(scored, list) and len(scored) == count and scored[0] is None, (
        f"prompt_logprobs gives one entry per prompt token ({count}), None for the first (nothing precedes it): "
        f"{str(scored)[:300]}"
    )
    assert all(isinstance(entry, dict) and entry for entry in scored[1:]), (
        f"each later entry maps tokens to logprobs: {scored[:3]}"
    )


def test_suffix_is_refused_or_changes_the_answer(vllm_http, vllm_server, complete):
    body = {"model": vllm_server.model, "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0, "suffix": " The end."}
    response = vllm_http.post("/v1/completions", json=body)
    if 400 <= response.status_code < 500:
        return  # refused, not silently ignored
    answered_ok(response, "suffix")
    assert response.json()["choices"][0]["text"] != text(complete()), (
        "accepted but ignored: `suffix` was answered 200 with exactly the greedy text of the same request "
        "without it; a server should refuse a suffix (4xx) or insert before it"
    )


def test_best_of_is_refused_or_gives_one_choice(vllm_http, vllm_server):
    body = {"model": vllm_server.model, "prompt": PROMPT, "max_tokens": 4, "temperature": 1, "seed": 1, "best_of": 2}
    response = vllm_http.post("/v1/completions", json=body)
    if 400 <= response.status_code < 500:
        return
    answered_ok(response, "best_of")
    assert len(response.json()["choices"]) == 1, (
        f"best_of=2 with n=1 returns the best one choice: {response.text[:300]}"
    )


@pytest.mark.vllm_requires("chat", "tokenize")
@pytest.mark.parametrize(
    "flags",
    [
        pytest.param({"add_generation_prompt": False}, id="add_generation_prompt=false"),
        pytest.param({"add_generation_prompt": False, "continue_final_message": True}, id="continue_final_message"),
    ],
)
def test_template_flags_shape_the_prompt_as_tokenize_renders_it(vllm_http, vllm_server, chat, flags):
    messages = PARTIAL if flags.get("continue_final_message") else MESSAGES
    rendered = vllm_http.post("/tokenize", json={"model": vllm_server.model, "messages": messages, **flags})
    answered_ok(rendered, f"/tokenize {flags}")
    tokens = rendered.json()["tokens"]
    default = vllm_http.post("/tokenize", json={"model": vllm_server.model, "messages": MESSAGES}).json()["count"]
    reply = chat(messages, **flags)
    assert reply["usage"]["prompt_tokens"] == len(tokens), (
        f"{flags}: chat renders the prompt as /tokenize does with the same flags ({len(tokens)} tokens): "
        f"usage {reply['usage']}"
    )
    assert len(tokens) != default or flags.get("continue_final_message"), (
        f"add_generation_prompt=false leaves out the assistant header: {len(tokens)} tokens, as many as with it"
    )
    by_tokens = vllm_http.post(
        "/v1/completions", json={"model": vllm_server.model, "prompt": tokens, "max_tokens": TOKENS, "temperature": 0}
    )
    assert by_tokens.status_code == 200, by_tokens.text[:300]
    assert reply["choices"][0]["message"]["content"] == by_tokens.json()["choices"][0]["text"], (
        f"{flags}: the chat answer continues exactly that prompt (greedy, as /v1/completions on its token ids): "
        f"{reply['choices'][0]['message']['content']!r} != {by_tokens.json()['choices'][0]['text']!r}"
    )


@pytest.mark.vllm_requires("chat", "vllm_sampling")
def test_chat_echo_prepends_the_continued_message(chat):
    flags = {"add_generation_prompt": False, "continue_final_message": True}
    plain = chat(PARTIAL, **flags)["choices"][0]["message"]["content"]
    echoed = chat(PARTIAL, echo=True, **flags)["choices"][0]["message"]["content"]
    assert echoed == PARTIAL[-1]["content"] + plain, (
        f"chat echo prepends the last message (the assistant's, continued): {echoed!r} != "
        f"{PARTIAL[-1]['content'] + plain!r}"
    )


@pytest.mark.vllm_requires("vllm_sampling", "return_token_ids")
def test_beam_search_of_width_one_is_greedy(complete):
    """A beam of width one keeps the likeliest token at each step: greedy, even at temperature 1.5 (the
    tokens compared by id: texts of partial UTF-8 may be decoded differently)."""
    beam = complete(**SAMPLED, seed=SEEDS[0], use_beam_search=True, ignore_eos=True, return_token_ids=True)
    greedy = complete(ignore_eos=True, return_token_ids=True)
    ids = [body["choices"][0]["token_ids"] for body in (beam, greedy)]
    assert ids[0] == ids[1], (
        f"use_beam_search with n=1 (a width-one beam) gives the greedy tokens whatever the temperature: "
        f"{ids[0]} ({text(beam)!r}) != {ids[1]} ({text(greedy)!r})"
    )


@pytest.mark.vllm_requires("vllm_sampling")
def test_beam_search_beams_are_distinct(complete):
    body = complete(n=3, use_beam_search=True, ignore_eos=True)
    texts = [choice["text"] for choice in body["choices"]]
    assert len(texts) == 3 and len(set(texts)) == 3, f"n=3 beams are three distinct sequences: {texts}"


STREAM_INTERVAL = 4


@pytest.mark.vllm_requires("vllm_sampling")
def test_stream_interval_puts_that_many_tokens_in_a_chunk(vllm_http, vllm_server, complete):
    body = {
        "model": vllm_server.model,
        "prompt": PROMPT,
        "max_tokens": TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_interval": STREAM_INTERVAL,
    }
    with vllm_http.stream("POST", "/v1/completions", json=body) as response:
        chunks = read_stream(response)
    pieces = [c["choices"][0]["text"] for c in chunks if c.get("choices") and c["choices"][0].get("text")]
    most = math.ceil(TOKENS / STREAM_INTERVAL) + 1  # the first token may come alone
    assert 0 < len(pieces) <= most, (
        f"stream_interval={STREAM_INTERVAL} sends {TOKENS} tokens in at most {most} chunks, got {len(pieces)}: {pieces}"
    )
    assert "".join(pieces) == text(complete(ignore_eos=True)), f"the chunks join to the greedy text: {pieces}"


@pytest.mark.vllm_requires("vllm")
def test_request_id_names_the_response(complete):
    request_id = "pytest-vllm-request-7"
    body = complete(max_tokens=1, request_id=request_id)
    assert request_id in body["id"], f"vLLM's request_id names the request and its response: id {body['id']!r}"


@pytest.mark.vllm_requires("chat", "tokenize")
def test_request_chat_template_is_refused_or_applied(vllm_http, vllm_server):
    """A request's own `chat_template` (vLLM refuses one unless --trust-request-chat-template) is
    applied or refused, never ignored: here it renders the bare message text."""
    content = MESSAGES[0]["content"]
    body = {
        "model": vllm_server.model,
        "messages": MESSAGES,
        "max_tokens": 1,
        "temperature": 0,
        "chat_template": "{% for message in messages %}{{ message['content'] }}{% endfor %}",
    }
    response = vllm_http.post("/v1/chat/completions", json=body)
    if 400 <= response.status_code < 500:
        return
    answered_ok(response, "chat_template")
    bare = vllm_http.post(
        "/tokenize", json={"model": vllm_server.model, "prompt": content, "add_special_tokens": False}
    )
    assert response.json()["usage"]["prompt_tokens"] == bare.json()["count"], (
        f"accepted but not applied: a chat_template rendering only the message text makes the prompt "
        f"{content!r} ({bare.json()['count']} tokens); usage {response.json()['usage']}"
    )
