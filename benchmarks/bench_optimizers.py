"""README's "Which optimizer?" table: ``jaxmle bench --problem all`` with its JSON and plot.

    python benchmarks/bench_optimizers.py [extra jaxmle bench arguments]

writes ``benchmarks/results/bench_optimizers.json`` (tables plus provenance: jaxmle,
jax, jaxlib, device, date, git commit) and ``docs/bench.png``, and prints the tables as
Markdown.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxmle.cli import main as cli

    args = ["bench", "--problem", "all", "--markdown",
            "--json", os.path.join(HERE, "results", "bench_optimizers.json"),
            "--plot", os.path.join(os.path.dirname(HERE), "docs", "bench.png")]
    return cli(args + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
