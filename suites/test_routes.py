"""vLLM's other generation routes: /v1/chat/completions/batch and SageMaker's /invocations.

The batch route answers N conversations in one request, one choice per conversation indexed
0..N-1, each prompt counted as the same conversation alone would count it. /invocations routes a
body by its shape: a chat body is answered as /v1/chat/completions, a prompt as /v1/completions.
Greedy texts are not compared between a batch and single requests: conversations batched
together may round differently (vLLM is not batch-invariant by default).
"""

import pytest

from pytest_vllm.checks.expect import answered_ok

CONVERSATIONS = [
    [{"role": "user", "content": "Name three colours."}],
    [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Say hello."}],
]


@pytest.mark.vllm_requires("chat", "chat_batch")
def test_chat_batch_answers_each_conversation(vllm_http, vllm_server):
    body = {"model": vllm_server.model, "messages": CONVERSATIONS, "max_tokens": 4, "temperature": 0}
    response = vllm_http.post("/v1/chat/completions/batch", json=body)
    answered_ok(response, "the batch")
    batch = response.json()
    indices = [choice["index"] for choice in batch["choices"]]
    assert indices == list(range(len(CONVERSATIONS))), f"one choice per conversation, indexed in order: {indices}"
    assert all(c["message"]["role"] == "assistant" for c in batch["choices"]), f"assistant messages: {batch['choices']}"
    alone = [
        vllm_http.post("/v1/chat/completions", json={**body, "messages": messages, "max_tokens": 1}).json()["usage"]
        for messages in CONVERSATIONS
    ]
    prompt_tokens = sum(usage["prompt_tokens"] for usage in alone)
    assert batch["usage"]["prompt_tokens"] == prompt_tokens, (
        f"the batch's prompt_tokens is the sum of each conversation's alone ({prompt_tokens}): {batch['usage']}"
    )


@pytest.mark.vllm_requires("invocations")
@pytest.mark.parametrize(
    ("route", "fields", "kind"),
    [
        pytest.param(
            "chat",
            {"messages": CONVERSATIONS[0]},
            "chat.completion",
            id="chat-body",
            marks=pytest.mark.vllm_requires("chat"),
        ),
        pytest.param(
            "completions",
            {"prompt": "Once upon a time"},
            "text_completion",
            id="prompt-body",
            marks=pytest.mark.vllm_requires("completions"),
        ),
    ],
)
def test_invocations_routes_by_the_body(vllm_http, vllm_server, route, fields, kind):
    body = {"model": vllm_server.model, "max_tokens": 4, "temperature": 0, **fields}
    response = vllm_http.post("/invocations", json=body)
    answered_ok(response, "/invocations")
    assert response.json()["object"] == kind, (
        f"/invocations answers a {route} body as /v1/{'chat/' if route == 'chat' else ''}completions does "
        f"(object {kind!r}): {response.text[:300]}"
    )
