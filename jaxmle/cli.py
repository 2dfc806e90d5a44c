"""The ``jaxmle`` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .optimizers import general_methods


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
    d.add_argument("--method", default="newton", choices=general_methods())
    d.add_argument("--float32", action="store_true", help="compute in float32 (the fast path on GPUs; measured slower than float64 on a 2-core CPU)")

    b = sub.add_parser("bench", help="compare optimizers on the benchmark problems")
    b.add_argument("--problem", default="all", help="problem name or 'all' (default)")
    b.add_argument("--methods", nargs="+", default=None, help=f"methods (default: {' '.join(general_methods())})")
    b.add_argument("--batch", type=_positive_int, default=None,
                   help="fit N copies of each dataset as one batch and report fits/s")
    b.add_argument("--repeats", type=_positive_int, default=3)
    b.add_argument("--json", default=None, help="write the tables as JSON to this file")
    b.add_argument("--plot", default=None, help="write convergence plots (PNG) to this file")
    b.add_argument("--markdown", action="store_true", help="print markdown tables")

    f = sub.add_parser("fit", help="fit a named distribution to a CSV column")
    f.add_argument("dist", help="distribution name, e.g. normal, poisson, gamma")
    f.add_argument("csv", help="CSV file with a header row")
    f.add_argument("--column", required=True, help="column to fit")
    f.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    f.add_argument("--fixed", nargs="*", default=[], metavar="NAME=VALUE",
                   help="parameters held fixed, e.g. n=10 for the binomial")
    f.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return p


class CLIError(Exception):
    """A user error: printed as one line on stderr, exit code 2."""


def _read_column(path: str, column: str):
    import csv

    import numpy as np

    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:
                raise CLIError(f"{path}: the file is empty")
            names = [n.strip() for n in reader.fieldnames]
            if column not in names:
                raise CLIError(f"{path}: no column {column!r}; columns are {names}")
            raw = [(i + 2, row[reader.fieldnames[names.index(column)]]) for i, row in enumerate(reader)]
    except OSError as e:
        raise CLIError(f"cannot read {path}: {e.strerror or e}") from None
    values = []
    for line, text in raw:
        text = (text or "").strip()
        if text == "":
            continue
        try:
            values.append(float(text))
        except ValueError:
            raise CLIError(f"{path}: line {line}, column {column!r}: {text!r} is not a number") from None
    if not values:
        raise CLIError(f"{path}: column {column!r} has no values")
    return np.asarray(values)


def _cmd_fit(args) -> int:
    import json

    import numpy as np

    from .distributions import fit_distribution, get

    get(args.dist)   # unknown names fail before the file is read
    fixed = {}
    for item in args.fixed:
        name, _, value = item.partition("=")
        try:
            fixed[name] = float(value)
        except ValueError:
            raise CLIError(f"--fixed expects NAME=VALUE, got {item!r}") from None
    if not 0 < args.level < 1:
        raise CLIError(f"--level must be in (0, 1), got {args.level}")
    x = _read_column(args.csv, args.column)
    res = fit_distribution(args.dist, x, fixed=fixed or None, warn=False)
    if args.json:
        ci = res.conf_int(args.level)
        out = {
            "distribution": args.dist, "n_obs": int(res.n_obs), "loglik": float(res.loglik),
            "aic": float(res.aic), "bic": float(res.bic), "status": int(res.status),
            "params": {k: np.asarray(v).tolist() for k, v in res.params.items()},
            "stderr": {k: np.asarray(v).tolist() for k, v in res.stderr.items()},
            "conf_int": {k: np.asarray(v).tolist() for k, v in ci.items()},
        }
        print(json.dumps(out, indent=2))
    else:
        print(res.summary(level=args.level))
    return 0


def _cmd_bench(args) -> int:
    import json

    import jax
    import jax.numpy as jnp

    from . import bench

    names = list(bench.problems.PROBLEMS) if args.problem == "all" else [args.problem]
    for n in names:
        if n not in bench.problems.PROBLEMS:
            raise CLIError(f"unknown problem {n!r}; known: {', '.join(bench.problems.PROBLEMS)}, all")
    known = general_methods()
    methods = args.methods or known
    for m in methods:
        if m not in known:
            raise CLIError(f"unknown method {m!r}; known: {', '.join(known)}")
    print(f"device: {jax.devices()[0]}, float64")
    tables, all_traces = [], {}
    for n in names:
        prob = bench.problems.get(n)
        data, init = prob.data, prob.init
        if args.batch:
            data = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (args.batch,) + a.shape), data)
        table = bench.compare(prob.model, data, methods=methods, batch=bool(args.batch),
                              repeats=args.repeats, init=init, reference=prob.reference)
        table.title = f"{n}: {prob.description} (reference: {prob.reference_kind})"
        tables.append(table)
        print()
        print(table.to_markdown() if args.markdown else table)
        if args.plot:
            all_traces[n] = (bench.traces(prob.model, prob.data, methods=methods, init=init), prob.reference)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([json.loads(t.to_json()) for t in tables], fh, indent=2)
        print(f"\nwrote {args.json}")
    if args.plot:
        try:
            bench.plot_problems(all_traces, args.plot)
        except ImportError as e:
            raise CLIError(str(e)) from None
        print(f"wrote {args.plot}")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    import jax

    # The command line is an application: it picks the precision for its own run.
    jax.config.update("jax_enable_x64", not getattr(args, "float32", False))
    try:
        if args.command == "demo":
            from ._demo import run_demo

            run_demo(args.stars, args.exposures, args.seed, args.compare, args.method)
            return 0
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "fit":
            return _cmd_fit(args)
    except (CLIError, ValueError, TypeError) as e:
        print(f"jaxmle {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
