"""The fault proxy itself, against a stand-in upstream (no vLLM needed)."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from pytest_vllm import faults
from pytest_vllm.proxy import FaultProxy


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
            first = json.loads(next(line for line in lines if line)[len("data: ") :])
            _Upstream.gate.set()  # the upstream sends the rest only after the client has the first event
            rest = [line for line in lines if line]
    assert response.headers["content-type"] == "text/event-stream"
    numbers = [first["number"]] + [json.loads(line[len("data: ") :])["number"] for line in rest[:-1]]
    assert numbers == ([0, 1, 2] if fault is None else [0, 2, 4]) and rest[-1] == "data: [DONE]"
    assert ("drop" in first["seen"]) == (fault is None), f"the request as the upstream saw it: {first['seen']}"
