"""The checks' helpers: what they assert holds for the server's answers.

An assertion raised in a module of this package is an expectation on the server that did not
hold (`failed`), as one raised in the check itself; an assertion anywhere else in pytest-vllm is
our own error. The package is the rule (pytest_vllm.verdicts reads it), so helpers that judge
answers live here and nowhere else.
"""
