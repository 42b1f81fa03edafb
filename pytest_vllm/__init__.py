"""pytest-vllm: a pytest plugin and conformance suite for vLLM's OpenAI-compatible server.

PYTEST_DONT_REWRITE: this file has no asserts, and `python -m pytest_vllm` imports it before
pytest starts (its submodules are still rewritten).
"""

__version__ = "0.1.0"
