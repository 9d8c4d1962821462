"""The benchmark suite of the "mnist5k-bench" protocol (docs/benchmarks.md).

``iresnet-bench`` (``iresnet.cli.bench``) composes the protocol's config and builds its modules;
this room measures them: training throughput and peak memory (each run in a fresh process),
evaluation, inversion, log-determinant and spectral-norm accuracy, data-parallel scaling, and the
full protocol. It imports the library rooms, never ``cli/``; the command-line tools it times run
as subprocesses. Kept free of eager imports so the memory worker starts light.
"""
