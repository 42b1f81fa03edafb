"""pytest-vllm: a pytest plugin and conformance suite for vLLM's OpenAI-compatible server."""

__version__ = "0.1.0"
