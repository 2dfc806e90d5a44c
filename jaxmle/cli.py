"""The ``jaxmle`` command line.

Nothing heavy is imported at module level: JAX and the fitting modules are imported
inside the commands, so ``jaxmle --version`` and ``--help`` answer at once.
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import sys
import warnings

from . import __version__

# The built-in methods that work on any model (jaxmle.optimizers.general_methods()),
# spelled out so that building the parser does not import JAX; a test keeps them equal.
GENERAL_METHODS = ("newton", "bfgs", "lbfgs", "adam", "gd")

# The distributions ``jaxmle fit`` knows (jaxmle.distributions.DISTRIBUTIONS), spelled
# out so that a mistyped name or a bad CSV is reported before JAX is imported (~2 s);
# a test keeps them equal.
DISTRIBUTION_NAMES = ("bernoulli", "beta", "binomial", "categorical", "exponential", "gamma", "geometric",
                      "lognormal", "multivariate_normal", "negative_binomial", "normal", "poisson",
                      "student_t", "uniform", "weibull")


def _general_methods() -> list[str]:
    """The methods the parser offers: the registry's, once jaxmle.optimizers is loaded
    (methods registered with jm.optimizers.register are in it), else the built-in ones."""
    opt = sys.modules.get(f"{__package__}.optimizers")
    return list(opt.general_methods()) if opt is not None else list(GENERAL_METHODS)


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
    d.add_argument("--method", default="newton", choices=_general_methods())
    d.add_argument("--float32", action="store_true", help="compute in float32 (the fast path on GPUs; measured slower than float64 on a 2-core CPU)")

    b = sub.add_parser("bench", help="compare optimizers on the benchmark problems")
    b.add_argument("--problem", default="quick",
                   help="a problem name, 'quick' (default: normal, logistic_illcond, banana; about a "
                        "minute) or 'all' (every problem, about 15 minutes on a 2-core CPU)")
    b.add_argument("--methods", nargs="+", default=None, help=f"methods (default: {' '.join(_general_methods())})")
    b.add_argument("--batch", type=_positive_int, default=None,
                   help="fit N copies of each dataset as one batch and report fits/s")
    b.add_argument("--repeats", type=_positive_int, default=3)
    b.add_argument("--json", default=None, help="write the tables as JSON to this file")
    b.add_argument("--plot", default=None, help="write convergence plots (PNG) to this file")
    b.add_argument("--markdown", action="store_true", help="print markdown tables")

    f = sub.add_parser("fit", help="fit a named distribution to a CSV column")
    f.add_argument("dist", help="distribution name, e.g. normal, poisson, gamma")
    f.add_argument("csv", help="CSV file with a header row; the delimiter (, ; tab |) is detected")
    f.add_argument("--column", required=True, help="column to fit")
    f.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    f.add_argument("--fixed", nargs="*", default=[], metavar="NAME=VALUE",
                   help="parameters held fixed, e.g. n=10 for the binomial")
    f.add_argument("--ci", choices=("wald", "profile"), default="wald",
                   help="interval method: wald (default) or profile (likelihood ratio; respects constraints)")
    f.add_argument("--dropna", action="store_true",
                   help="drop rows whose cell is blank or NA (reported on stderr) instead of failing")
    f.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return p


class CLIError(Exception):
    """A user error: printed as one line on stderr, exit code 2."""


# Cells read as missing values (case-insensitive), besides a blank cell.
MISSING = {"na", "n/a", "nan", "null", "none", "-"}
DELIMITERS = ",;\t|"


def _delimiter(text: str) -> str:
    """The file's delimiter: csv.Sniffer on the first lines, checked against the header."""
    lines = text.splitlines()
    header = lines[0] if lines else ""
    try:
        found = csv.Sniffer().sniff("\n".join(lines[:50]), delimiters=DELIMITERS).delimiter
        if found in header:
            return found
    except csv.Error:
        pass
    # One column, or a sample the sniffer cannot decide: the most frequent candidate
    # in the header (a comma when there is none).
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _number(text: str, delimiter: str) -> float:
    try:
        return float(text)
    except ValueError:
        # Semicolon files usually come with decimal commas ("2,5").
        if delimiter == ";" and text.count(",") == 1 and "." not in text:
            return float(text.replace(",", "."))
        raise


def _read_column(path: str, column: str, dropna: bool = False):
    """The numeric values of one CSV column, and the line numbers of rows dropped as missing.

    Blank cells and NA-like cells (NA, N/A, NaN, null, None, -) are an error naming
    the line, unless ``dropna``: then those rows are dropped and reported.
    """
    import numpy as np

    try:
        with open(path, newline="") as fh:
            text = fh.read()
    except OSError as e:
        raise CLIError(f"cannot read {path}: {e.strerror or e}") from None
    if not text.strip():
        raise CLIError(f"{path}: the file is empty")
    delimiter = _delimiter(text)
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    names = [n.strip() for n in reader.fieldnames]
    if column not in names:
        raise CLIError(f"{path}: no column {column!r}; columns are {names} (delimiter {delimiter!r})")
    key = reader.fieldnames[names.index(column)]
    values, dropped = [], []
    for row in reader:
        line = reader.line_num
        cell = (row.get(key) or "").strip()
        if cell == "" or cell.lower() in MISSING:
            if not dropna:
                what = "blank cell" if cell == "" else f"missing value {cell!r}"
                raise CLIError(f"{path}: line {line}, column {column!r}: {what}; pass --dropna to drop "
                               "rows with missing values")
            dropped.append(line)
            continue
        try:
            values.append(_number(cell, delimiter))
        except ValueError:
            raise CLIError(f"{path}: line {line}, column {column!r}: {cell!r} is not a number") from None
    if not values:
        raise CLIError(f"{path}: column {column!r} has no values")
    return np.asarray(values), dropped


def _profile_table(res, level: float) -> str:
    """Profile-likelihood intervals of the free parameters as a text table."""
    from ._profile import profile_intervals

    flat, edge = profile_intervals(res, level)
    lines = [f"profile-likelihood {level:.3g} intervals (the table's are Wald):",
             f"{'':>14}{'lower':>11}{'upper':>11}"]
    for i, name in enumerate(res.param_names):
        note = "   (a bound is the constraint edge)" if edge[i].any() else ""
        lines.append(f"{name[:14]:>14}{flat[i, 0]:>11.5g}{flat[i, 1]:>11.5g}{note}")
    return "\n".join(lines)


def _check_fit(args):
    """``jaxmle fit``'s input, checked and read without importing JAX: (x, dropped, fixed).

    An unknown distribution fails before the file is read."""
    if args.dist not in DISTRIBUTION_NAMES:
        raise CLIError(f"unknown distribution {args.dist!r}; known: {', '.join(sorted(DISTRIBUTION_NAMES))}")
    fixed = {}
    for item in args.fixed:
        name, _, value = item.partition("=")
        try:
            fixed[name] = float(value)
        except ValueError:
            raise CLIError(f"--fixed expects NAME=VALUE, got {item!r}") from None
    if not 0 < args.level < 1:
        raise CLIError(f"--level must be in (0, 1), got {args.level}")
    x, dropped = _read_column(args.csv, args.column, args.dropna)
    return x, dropped, fixed


def _cmd_fit(args, checked) -> int:
    import json

    import numpy as np

    from ._status import Status
    from .distributions import fit_distribution

    x, dropped, fixed = checked
    if dropped:
        shown = ", ".join(map(str, dropped[:5])) + (", ..." if len(dropped) > 5 else "")
        print(f"jaxmle fit: dropped {len(dropped)} row{'s' if len(dropped) > 1 else ''} with a missing "
              f"value in column {args.column!r} (line{'s' if len(dropped) > 1 else ''} {shown})",
              file=sys.stderr)
    res = fit_distribution(args.dist, x, fixed=fixed or None, warn=False)
    if args.json:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # edges are reported as such in the JSON
            ci = res.conf_int(args.level, method=args.ci)
        out = {
            "distribution": args.dist, "n_obs": int(res.n_obs), "dropped_rows": len(dropped),
            "loglik": float(res.loglik), "aic": float(res.aic), "bic": float(res.bic),
            "status": Status(int(res.status)).name,
            "params": {k: np.asarray(v).tolist() for k, v in res.params.items()},
            "stderr": {k: np.asarray(v).tolist() for k, v in res.stderr.items()},
            "conf_int": {k: np.asarray(v).tolist() for k, v in ci.items()},
            "ci_method": args.ci,
        }
        print(json.dumps(out, indent=2))
    else:
        print(res.summary(level=args.level))
        if args.ci == "profile":
            print(_profile_table(res, args.level))
    return 0


def _duration(seconds: float) -> str:
    return f"~{seconds:.0f} s" if seconds < 90 else f"~{seconds / 60:.0f} minutes"


def _provenance() -> dict:
    """What produced a benchmark table: jaxmle (and its git commit when run from a checkout),
    jax, jaxlib, the device and the date."""
    import datetime
    import os
    import subprocess

    import jax
    import jaxlib

    from . import __version__

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = dirty = None
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        if commit:
            dirty = bool(subprocess.run(["git", "-C", here, "status", "--porcelain", "--", "jaxmle"],
                                        capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"jaxmle": __version__, "git_commit": commit, "git_dirty": dirty, "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "device_kind": jax.devices()[0].device_kind,
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _cmd_bench(args) -> int:
    import json

    import jax
    import jax.numpy as jnp

    from . import bench
    from . import optimizers as _optimizers

    suites = {"all": list(bench.problems.PROBLEMS), "quick": list(bench.problems.QUICK)}
    names = suites.get(args.problem, [args.problem])
    for n in names:
        if n not in bench.problems.PROBLEMS:
            raise CLIError(f"unknown problem {n!r}; known: {', '.join(bench.problems.PROBLEMS)}, quick, all")
    known = _optimizers.general_methods()
    methods = args.methods or known
    for m in methods:
        if m not in known:
            raise CLIError(f"unknown method {m!r}; known: {', '.join(known)}")
    print(f"device: {jax.devices()[0]}, float64")
    secs = bench.problems.estimate_seconds(names, methods)
    hint = "" if secs < 90 or args.problem != "all" else "; --problem quick takes about a minute"
    print(f"{len(names)} problem{'s' if len(names) > 1 else ''} x {len(methods)} method"
          f"{'s' if len(methods) > 1 else ''}: estimated {_duration(secs)} on a 2-core CPU{hint}", flush=True)
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
            json.dump({"provenance": _provenance(), "tables": [json.loads(t.to_json()) for t in tables]},
                      fh, indent=2)
        print(f"\nwrote {args.json}")
    if args.plot:
        try:
            bench.plot_problems(all_traces, args.plot)
        except ImportError as e:
            raise CLIError(str(e)) from None
        print(f"wrote {args.plot}")
    return 0


def _import_jax() -> None:
    """Import JAX for a command. When this call is what imports it (the command line as
    its own process, a short-lived application), the ~100,000 objects the import creates
    live until the process exits: the collector is paused while they load and they are
    then frozen out of its passes (each full pass would walk them all). Called from a
    process that has JAX already (tests, a notebook), it changes nothing."""
    if "jax" in sys.modules:
        return
    was = gc.isenabled()
    gc.disable()
    try:
        import jax  # noqa: F401
    finally:
        if was:
            gc.freeze()
            gc.enable()


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        # Input errors are answered before JAX is imported.
        checked = _check_fit(args) if args.command == "fit" else None
        _import_jax()
        import jax

        # The command line is an application: it picks the precision for its own run.
        jax.config.update("jax_enable_x64", not getattr(args, "float32", False))
        if args.command == "demo":
            from ._demo import run_demo

            run_demo(args.stars, args.exposures, args.seed, args.compare, args.method)
            return 0
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "fit":
            return _cmd_fit(args, checked)
    except (CLIError, ValueError, TypeError) as e:
        print(f"jaxmle {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
