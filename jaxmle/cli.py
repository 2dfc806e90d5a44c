"""The ``jaxmle`` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxmle", description="Maximum-likelihood estimation on JAX.")
    p.add_argument("--version", action="version", version=f"jaxmle {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser("demo", help="fit a synthetic star catalogue in one batched call")
    d.add_argument("--stars", type=_positive_int, default=10_000, help="number of stars (default 10000)")
    d.add_argument("--exposures", type=_positive_int, default=64, help="exposures per star (default 64)")
    d.add_argument("--seed", type=int, default=0, help="catalogue seed (default 0)")
    d.add_argument("--compare", type=int, default=200,
                   help="stars fitted by a scipy loop for comparison (0 to skip; default 200)")
    d.add_argument("--method", default="newton", choices=["newton", "bfgs", "lbfgs", "adam", "gd"])
    d.add_argument("--float32", action="store_true", help="compute in float32 (the fast path)")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    import jax

    if args.command == "demo":
        # The command line is an application: it picks the precision for its own run.
        jax.config.update("jax_enable_x64", not args.float32)
        from ._demo import run_demo

        run_demo(args.stars, args.exposures, args.seed, args.compare, args.method)
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
