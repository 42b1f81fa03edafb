"""pytest-vllm's conformance suites: one module per area of vLLM's OpenAI-compatible server."""
