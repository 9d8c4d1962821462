"""The mnist5k-bench benchmark suite; the same as the ``iresnet-bench`` command.

Usage: ``python scripts/benchmark.py [profile=quick] [sections=[train,eval]] [out=results.json]``;
``--cfg job`` prints every setting, docs/benchmarks.md describes the protocol and the report.
"""

from iresnet.cli.bench import main

if __name__ == "__main__":
    main()
