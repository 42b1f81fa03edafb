"""A stand-in for `vllm serve`, only to drive the plugin's own failure paths in tests/.

Takes the launcher's arguments (`--model M --served-model-name N --host H --port P ...`)
and behaves as FAKE_VLLM_MODE says:
  ok       serves /health, /version, /v1/models (and 401 without VLLM_API_KEY's key)
  crash    prints an error and exits 1 at once
  hang     never answers
  die      serves, then exits when a /v1/ path it does not know is requested (as /v1/die)
In every mode that serves, GET /v1/reset-once resets the first connection that asks (no
answer) and answers 200 after; /v1/reset-always always resets; /v1/exit exits at once;
/v1/busy-once answers 429 (Retry-After: 1) once, then 200; /v1/busy-always answers 503; /v1/slow answers
200 after 3 s;
GET /v1/wedge wedges the engine: it and every later POST get no answer, while GET /v1/models still
answers (until then a POST answers 501). GET /v1/break breaks it as a dead vLLM engine behind a live API
server does: it and every later POST answer 500.
Each start appends a line to $FAKE_VLLM_STARTS, if set, so tests can count launches.
"""

import argparse
import io
import json
import os
import socket
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?")
    parser.add_argument("--model", dest="model_flag")
    parser.add_argument("--served-model-name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args, _ = parser.parse_known_args()
    mode = os.environ.get("FAKE_VLLM_MODE", "ok")
    if os.environ.get("FAKE_VLLM_STARTS"):
        with open(os.environ["FAKE_VLLM_STARTS"], "a") as starts:
            starts.write(f"{os.getpid()}\n")
    print(f"fake vllm starting in mode {mode}", flush=True)
    if mode == "crash":
        print("ValueError: No supported config format found in /broken/model", flush=True)
        sys.exit(1)
    if mode == "hang":
        time.sleep(3600)
    name = args.served_model_name or args.model_flag or args.model
    key = os.environ.get("VLLM_API_KEY")

    resets, busy, wedged, broken = [], [], [], []
    engine_dead = {"error": {"message": "EngineCore encountered an issue.", "type": "InternalServerError"}}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if wedged:
                time.sleep(3600)
            if broken:
                return self.reply(500, engine_dead)
            self.send_error(501, "Unsupported method ('POST')")

        def do_GET(self) -> None:
            if self.path == "/v1/exit":
                os._exit(3)
            if self.path == "/v1/break":
                broken.append(self.path)
                return self.reply(500, engine_dead)
            if self.path == "/v1/wedge":
                wedged.append(self.path)
                time.sleep(3600)
            if self.path == "/v1/reset-always" or (self.path == "/v1/reset-once" and not resets):
                resets.append(self.path)
                return self.reset()
            if self.path == "/v1/reset-once":
                return self.reply(200, {"reset": len(resets)})
            if self.path == "/v1/busy-once" and not busy:
                busy.append(self.path)
                return self.reply(429, {"error": "No deployments available"}, {"Retry-After": "1"})
            if self.path == "/v1/busy-once":
                return self.reply(200, {"busy": len(busy)})
            if self.path == "/v1/slow":
                time.sleep(3)
                return self.reply(200, {"slow": True})
            if self.path == "/v1/busy-always":
                return self.reply(503, {"error": "overloaded"}, {"Retry-After": "1"})
            if self.path.startswith("/v1") and key and self.headers.get("Authorization") != f"Bearer {key}":
                return self.reply(401, {"error": "Unauthorized"})
            if self.path == "/health":
                return self.reply(200, None)
            if self.path == "/version":
                return self.reply(200, {"version": "0.0.0-fake"})
            if self.path == "/v1/models":
                return self.reply(200, {"object": "list", "data": [{"id": name, "object": "model"}]})
            if mode == "die":
                os._exit(3)
            self.reply(404, {"detail": "Not Found"})

        def reset(self) -> None:
            """Close the connection with a TCP reset, answering nothing."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            self.wfile = io.BytesIO()  # what the handler flushes after this goes nowhere

        def reply(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            print(f"fake vllm: {self.requestline}", flush=True)

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
