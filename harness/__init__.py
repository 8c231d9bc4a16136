"""What the tests and the benchmarks share: the real services they run against
(:mod:`harness.servers`), small helpers that read and tick (:mod:`harness.helpers`), real
Celery processes (:mod:`harness.processes`), the TCP fault proxy and queue reader
(:mod:`harness.proxy`) and the multi-beat chaos scenario (:mod:`harness.chaos`).

Not part of the package: it is not installed. pytest puts the repository root on the path
(``pythonpath`` in pyproject.toml); each benchmark script does it for itself.
"""
