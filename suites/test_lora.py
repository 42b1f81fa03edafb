"""LoRA adapters: listed in /v1/models with `parent`, served by name, loaded and unloaded at runtime.

An adapter is a /v1/models entry with a non-null `parent` (the base model's id). A request
naming it is served by it: its greedy output differs from the base model's (or, where the
text happens to match, its logprobs do) and `model` echoes its name. Runtime loading
(`VLLM_ALLOW_RUNTIME_LORA_UPDATING`) reloads an existing adapter's directory (the `root`
vLLM reports for it) under a new name, through either family of routes: vLLM's
/v1/load_lora_adapter and /v1/unload_lora_adapter, and SageMaker's POST /adapters and
DELETE /adapters/{name}. Errors: an unknown adapter, a bad path, a duplicate load and the
unload of an unknown adapter are refused with a 4xx. Random sequences of loads, uses and
unloads (`Lifecycle`, a Hypothesis state machine, under --vllm-fuzz) keep every answer and
/v1/models consistent with what is loaded at each step.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from pytest_vllm.outcomes import Unsupported
from pytest_vllm.verdicts import fingerprint

TOKENS = 16
PROMPT = "Once upon a time"
OWN_PREFIX = "pytest-vllm-"  # adapters this suite loads (perhaps in a parallel worker) are not the server's
LOGPROB_DIFFERENCE = 1e-3


@pytest.fixture(scope="module")
def server(vllm):
    return vllm.server_with("lora")


@pytest.fixture(scope="module")
def http(vllm, server):
    client = vllm.http(server)
    yield client
    client.close()


def _models(http):
    response = http.get("/v1/models")
    assert response.status_code == 200, f"/v1/models answered {response.status_code}: {response.text[:300]}"
    return {entry["id"]: entry for entry in response.json()["data"]}


@pytest.fixture(scope="module")
def adapters(http):
    """The /v1/models entries of the server's own adapters."""
    return {id: entry for id, entry in _models(http).items() if entry.get("parent") and not id.startswith(OWN_PREFIX)}


@pytest.fixture(scope="module")
def send(vllm, server, http):
    """`send(model, **fields)`: the raw answer of `model` (base or adapter) to a fixed prompt, greedy and
    `TOKENS` long; /v1/completions if the server serves it, else /v1/chat/completions."""
    completions = vllm.has(server, "completions")

    def post(model, **fields):
        body = {"model": model, "max_tokens": TOKENS, "temperature": 0, "ignore_eos": True, **fields}
        if completions:
            return http.post("/v1/completions", json={"prompt": PROMPT, **body})
        return http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": PROMPT}], **body})

    return post


@pytest.fixture(scope="module")
def generate(vllm, server, send):
    """`generate(model)`: `(body, text, token logprobs or None)` of `model`'s answer, which must be 200."""
    fields = {}
    if vllm.has(server, "logprobs"):
        fields = {"logprobs": 0} if vllm.has(server, "completions") else {"logprobs": True}

    def create(model):
        response = send(model, **fields)
        assert response.status_code == 200, (
            f"a request with model {model!r} answered {response.status_code}: {response.text[:300]}"
        )
        answer = response.json()
        [choice] = answer["choices"]
        if "text" in choice:
            return answer, choice["text"], (choice["logprobs"] or {}).get("token_logprobs")
        values = [t["logprob"] for t in choice["logprobs"]["content"]] if choice.get("logprobs") else None
        return answer, choice["message"]["content"], values

    return create


def _same_output(first, second):
    """Same greedy text and (where sent) logprobs within `LOGPROB_DIFFERENCE`."""
    (_, text1, values1), (_, text2, values2) = first, second
    if text1 != text2:
        return False
    return (
        values1 is None
        or values2 is None
        or max(abs(x - y) for x, y in zip(values1, values2, strict=False)) <= LOGPROB_DIFFERENCE
    )


@dataclass(frozen=True)
class Routes:
    """A family of runtime adapter routes and the capability that says the server has it."""

    capability: str
    load: Callable[[httpx.Client, str, str], httpx.Response]
    unload: Callable[[httpx.Client, str], httpx.Response]


ROUTES = {
    "v1": Routes(
        "lora_runtime",
        lambda http, name, path: http.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path}),
        lambda http, name: http.post("/v1/unload_lora_adapter", json={"lora_name": name}),
    ),
    "adapters": Routes(
        "adapters",
        lambda http, name, path: http.post("/adapters", json={"name": name, "src": path}),
        lambda http, name: http.delete(f"/adapters/{name}"),
    ),
}


def test_adapters_listed_with_parent(http, server, adapters):
    models = _models(http)
    bases = {id for id, entry in models.items() if not entry.get("parent")}
    assert server.model in bases, f"the served base model {server.model!r} is listed without a parent: {sorted(bases)}"
    for id, entry in adapters.items():
        assert entry["parent"] in bases, (
            f"an adapter's parent is the id of the base model it adapts (vLLM's ModelCard.parent); adapter "
            f"{id!r} has parent {entry['parent']!r}, base models are {sorted(bases)}"
        )
        assert entry["object"] == "model", f"an adapter is listed as a model object: {entry}"


def test_adapter_serves_its_requests(server, adapters, generate):
    base = generate(server.model)
    for name in adapters:
        answer = generate(name)
        assert answer[0]["model"] == name, (
            f"a request naming adapter {name!r} is answered with model {name!r}, got {answer[0]['model']!r}"
        )
        assert not _same_output(answer, base), (
            f"adapter {name!r} should change the model's greedy output on {PROMPT!r} ({TOKENS} tokens, "
            f"ignore_eos) or, if the text matches, its logprobs; both gave {answer[1]!r}"
        )


def test_unknown_adapter_is_404(send):
    name = f"{OWN_PREFIX}no-such-adapter-{uuid.uuid4().hex[:8]}"
    response = send(name, max_tokens=1)
    assert response.status_code == 404, (
        f"a request naming an adapter the server does not have (model={name!r}) should be 404 Not Found, "
        f"like an unknown model; got {response.status_code}: {response.text[:300]}"
    )
    error = response.json().get("error")
    assert isinstance(error, dict) and error.get("message"), f"the 404 is an OpenAI error object: {response.text[:300]}"


@pytest.fixture(scope="module", params=ROUTES, ids=ROUTES)
def runtime(request, vllm, server) -> Routes:
    """A family of routes with which the server loads and unloads adapters at runtime (else the
    check is unsupported)."""
    routes = ROUTES[request.param]
    vllm.require(server, routes.capability)
    return routes


@pytest.fixture(scope="module")
def adapter_path(runtime, adapters):
    """`(name, directory)` of an adapter the server serves, from its /v1/models `root`."""
    for name, entry in adapters.items():
        root = entry.get("root")
        if isinstance(root, str) and root and root != name:
            return name, root
    raise Unsupported(
        "unsupported: no adapter's directory is known (/v1/models gives no `root` path for an adapter), "
        "so none can be loaded at runtime"
    )


@pytest.fixture
def new_name(http, runtime):
    """A fresh adapter name, unloaded after the check if it was loaded."""
    name = f"{OWN_PREFIX}lora-{uuid.uuid4().hex[:8]}"
    yield name
    runtime.unload(http, name)


def test_runtime_load_and_unload(http, runtime, adapters, adapter_path, new_name, generate, send):
    source, root = adapter_path
    response = runtime.load(http, new_name, root)
    assert response.status_code == 200, (
        f"loading adapter directory {root!r} as {new_name!r} should succeed: "
        f"{response.status_code} {response.text[:300]}"
    )
    listed = _models(http).get(new_name)
    parent = adapters[source]["parent"]
    assert listed is not None and listed.get("parent") == parent and listed.get("root") == root, (
        f"a loaded adapter is listed in /v1/models with its parent ({parent!r}) and path ({root!r}): "
        f"{new_name!r} -> {listed}"
    )
    loaded = generate(new_name)
    assert loaded[0]["model"] == new_name, f"answered as model {loaded[0]['model']!r}, expected {new_name!r}"
    assert _same_output(loaded, generate(source)), (
        f"{new_name!r} holds the same weights as {source!r} (loaded from its directory), so their greedy "
        f"outputs match: {loaded[1]!r}"
    )
    response = runtime.unload(http, new_name)
    assert response.status_code == 200, (
        f"unloading {new_name!r} should succeed: {response.status_code} {response.text[:300]}"
    )
    assert new_name not in _models(http), f"an unloaded adapter is no longer listed in /v1/models: {new_name!r}"
    gone = send(new_name, max_tokens=1)
    assert gone.status_code == 404, (
        f"a request naming an unloaded adapter is 404 Not Found: {gone.status_code} {gone.text[:300]}"
    )


def test_load_from_a_bad_path_is_4xx(http, runtime, new_name):
    path = f"/nonexistent/pytest-vllm/{new_name}"
    response = runtime.load(http, new_name, path)
    assert 400 <= response.status_code < 500, (
        f"loading an adapter from a directory that does not exist ({path}) is the client's error: a 4xx; "
        f"got {response.status_code}: {response.text[:300]}"
    )
    assert new_name not in _models(http), f"a failed load must not list {new_name!r} in /v1/models"


def test_duplicate_load_is_4xx(http, runtime, adapter_path):
    name, root = adapter_path
    response = runtime.load(http, name, root)
    assert 400 <= response.status_code < 500, (
        f"loading adapter {name!r} again under its name (already loaded) should be refused with a 4xx; got "
        f"{response.status_code}: {response.text[:300]}"
    )


def test_unload_of_an_unknown_adapter_is_4xx(http, runtime, new_name):
    response = runtime.unload(http, new_name)
    assert 400 <= response.status_code < 500, (
        f"unloading {new_name!r}, which was never loaded, should be refused with a 4xx; got "
        f"{response.status_code}: {response.text[:300]}"
    )


LIFECYCLE_NAMES = 2
NAME = st.integers(0, LIFECYCLE_NAMES - 1)  # which of the run's fresh adapter names a step uses


class Lifecycle(RuleBasedStateMachine):
    """load -> 200 if the name is free, else 4xx; use -> 200 answered as it if loaded, else 404;
    unload -> 200 if loaded, else 4xx; /v1/models lists exactly the loaded names after each step."""

    def __init__(self, http, runtime, root, send):
        super().__init__()
        self.http, self.runtime, self.root, self.send = http, runtime, root, send
        self.names = [f"{OWN_PREFIX}cycle-{uuid.uuid4().hex[:8]}-{i}" for i in range(LIFECYCLE_NAMES)]
        self.loaded, self.done = set(), []

    @rule(i=NAME)
    def load(self, i):
        name = self.names[i]
        self._answered("load", i, self.runtime.load(self.http, name, self.root), ok=name not in self.loaded)
        self.loaded.add(name)

    @rule(i=NAME)
    def use(self, i):
        name = self.names[i]
        response = self._answered("use", i, self.send(name, max_tokens=1), ok=name in self.loaded)
        if name in self.loaded:
            fingerprint("a loaded adapter's answer names another model")
            assert response.json()["model"] == name, f"answered as {response.json()['model']!r}; steps {self.done}"

    @rule(i=NAME)
    def unload(self, i):
        name = self.names[i]
        self._answered("unload", i, self.runtime.unload(self.http, name), ok=name in self.loaded)
        self.loaded.discard(name)

    @precondition(lambda self: self.done)  # after each step (not before the first)
    @invariant()
    def lists_the_loaded(self):
        listed = {id for id in _models(self.http) if id in self.names}
        fingerprint("/v1/models does not list exactly the loaded adapters")
        assert listed == self.loaded, (
            f"/v1/models lists {sorted(listed)}, loaded are {sorted(self.loaded)}; steps {self.done}"
        )

    def teardown(self):
        for name in self.loaded:
            self.runtime.unload(self.http, name)

    def _answered(self, op, i, response, ok):
        """`response` to `op` on name `i`, which must be 200 if `ok`, else 404 (a use) or a 4xx."""
        was = "a loaded" if self.names[i] in self.loaded else "an unloaded"
        self.done.append(f"{op} {i} -> {response.status_code}")
        expected = "200" if ok else ("404" if op == "use" else "a 4xx")
        fingerprint(f"{op} of {was} adapter answered {response.status_code}, not {expected}")
        good = (
            response.status_code == 200
            if ok
            else (response.status_code == 404 if op == "use" else 400 <= response.status_code < 500)
        )
        assert good, f"{op} of {was} adapter should answer {expected}; steps {self.done}: {response.text[:300]}"
        return response


def test_random_lifecycles_keep_the_adapters_state(http, runtime, adapter_path, send, vllm_fuzz):
    """Random runs of `Lifecycle` (up to 8 steps each) on two fresh names, under --vllm-fuzz."""
    _, root = adapter_path

    @vllm_fuzz(max_examples=6, deadline=None, stateful_step_count=8)  # sets Run.TestCase.settings and the seed
    class Run(Lifecycle):
        def __init__(self):
            super().__init__(http, runtime, root, send)

    run_state_machine_as_test(Run, settings=Run.TestCase.settings)
