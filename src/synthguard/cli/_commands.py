"""The ``synthguard`` command line: ``demo``, ``reference build|calibrate``, ``check``, ``bench``.

Exit codes: 0 success (``check``: batch accepted), 1 batch rejected (``check``), 2 usage or
input error (argparse's convention), 3 internal error.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from synthguard._errors import InvalidInputError, SynthGuardError
from synthguard.cli._paths import (
    add_input_options,
    check_outputs,
    encoder_inputs,
    input_options,
    source_inputs,
)

__all__ = ["main"]

_EXAMPLES = {
    "demo": """example:
  synthguard demo                                  # 10 generations, report in synthguard-demo/
  synthguard demo --generations 5 --seed 1 --out /tmp/demo --no-progress""",
    "build": """example:
  synthguard reference build --input real_pairs/ --encoder openclip:ViT-B-32/laion2b_s34b_b79k \\
      --out real.sgref
  synthguard reference build --input real.tar --encoder bundled:digits --out digits.sgref \\
      --label-names zero,one,two,three,four,five,six,seven,eight,nine \\
      --template "a handwritten digit {name}" --calibrate-sizes 64,256

INPUT: a folder with captions.jsonl (or .csv), WebDataset .tar/.tar.gz shards (img2dataset
layout; a folder of them or a quoted brace pattern 'shards/{000..009}.tar') or a .parquet file;
see synthguard.sources.""",
    "calibrate": """example:
  synthguard reference calibrate digits.sgref --sizes 64,256,1024   # rewrites digits.sgref
  synthguard reference calibrate digits.sgref --sizes 512 --alpha 0.1 --out ci.sgref
  synthguard reference calibrate digits.sgref --sizes 512 --config guard.yaml --out ci.sgref

The nulls are computed for the GuardConfig of `synthguard check` with the same --config,
--alpha, --alpha-batch and --seed; each size brings its grid size and the one below.""",
    "check": """example:
  synthguard check --reference real.sgref --input synthetic.tar --out report.json \\
      --html report.html --write-accepted accepted.tar
  synthguard check --reference real.sgref --input 'shards/{000..009}.tar' --config guard.yaml
exit code: 0 accepted, 1 rejected or excess_rejects, 2 usage or input error""",
    "bench": """example:
  synthguard bench                  # guard overhead vs embedding on the bundled model""",
}


_INPUT_HELP = (
    "{what}: a folder, a .tar/.tar.gz/.tgz shard or a folder of them, a quoted brace pattern "
    "of shards ('shards/{{000..009}}.tar'), or a .parquet file"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthguard",
        description="Guard retraining pipelines against model collapse from synthetic data.",
    )
    parser.add_argument("--version", action="version", version=f"synthguard {_version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an internal error"
    )
    parser.epilog = (
        "exit codes: 0 success (check: accepted), 1 check: not accepted, 2 usage or input "
        f"error, {EXIT_INTERNAL} internal error (a bug: rerun with --debug and report it)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def add(sub: Any, name: str, key: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, help=text, description=text, epilog=_EXAMPLES[key],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        return parser

    demo = add(commands, "demo", "demo", "a self-consuming loop on real digits, guarded or not")
    demo.add_argument("--generations", type=int, default=10, help="generations after the real one")
    demo.add_argument("--seed", type=int, default=0, help="seed of the whole run")
    demo.add_argument("--out", default="synthguard-demo", help="folder for report.html and logs")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    reference = commands.add_parser("reference", help="build a reference from real pairs")
    ref_commands = reference.add_subparsers(dest="reference_command", required=True)
    build = add(ref_commands, "build", "build", "embed real pairs and calibrate a reference")
    build.add_argument("--input", required=True, help=_INPUT_HELP.format(what="real pairs"))
    build.add_argument("--encoder", required=True, help="encoder spec, e.g. bundled:digits")
    build.add_argument("--out", required=True, help="reference file to write (.sgref)")
    build.add_argument("--label-names", help="comma-separated class names (labels index them)")
    build.add_argument(
        "--ignore-labels", action="store_true",
        help="build without the input's labels (else labels need --label-names)",
    )  # fmt: skip
    build.add_argument("--template", default="a photo of a {name}", help="zero-shot template")
    build.add_argument("--support-size", type=int, default=10_000, help="support pairs kept")
    add_input_options(build)
    build.add_argument(
        "--calibrate-sizes", type=_sizes, default=(), metavar="N,N,...",
        help="batch sizes whose batch-test nulls are computed now and saved (for --config)",
    )  # fmt: skip
    _config_file_flag(
        build, "GuardConfig fields (YAML or JSON) whose nulls --calibrate-sizes computes: the "
        "file `check --config` reads",
    )  # fmt: skip
    build.add_argument("--threads", type=int, help="CPU threads (default: every core)")
    build.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    calibrate = add(
        ref_commands, "calibrate", "calibrate",
        "compute batch-test nulls ahead and save them into the reference",
    )  # fmt: skip
    calibrate.add_argument("reference", help="reference file (.sgref), rewritten atomically")
    calibrate.add_argument(
        "--sizes", type=_sizes, required=True, metavar="N,N,...",
        help="sizes of the batches that will be checked",
    )  # fmt: skip
    calibrate.add_argument("--out", help="write here instead of over the reference")
    calibrate.add_argument("--threads", type=int, help="CPU threads (default: every core)")
    calibrate.add_argument(
        "--device", help="where to compute, e.g. cuda (default: the config's device, else cpu)"
    )
    calibrate.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _config_flags(calibrate)

    check = add(commands, "check", "check", "check synthetic pairs against a reference")
    check.add_argument("--reference", required=True, help="reference file (.sgref)")
    check.add_argument("--input", required=True, help=_INPUT_HELP.format(what="synthetic pairs"))
    check.add_argument("--encoder", help="encoder spec (default: the one the reference names)")
    check.add_argument("--out", help="write the JSON report here")
    check.add_argument("--html", help="write the HTML report here")
    check.add_argument("--write-accepted", help="write accepted, relabeled pairs (same layout)")
    check.add_argument("--threads", type=int, help="CPU threads (default: every core)")
    check.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _config_flags(check)
    add_input_options(check)

    add(commands, "bench", "bench", "measure the guard's overhead against embedding")
    return parser


def _config_file_flag(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--config", metavar="FILE", help=text)


def _config_flags(parser: argparse.ArgumentParser) -> None:
    """The GuardConfig flags a null depends on (``check`` and ``calibrate`` must agree); unset,
    they leave the ``--config`` file's values (or GuardConfig's defaults) in place."""
    _config_file_flag(
        parser, "GuardConfig fields from a YAML or JSON file (docs/cli.md); flags override it"
    )
    parser.add_argument("--alpha", type=float, help="per-sample false-reject rate (default 0.05)")
    parser.add_argument("--alpha-batch", type=float, help="batch family-wise level (default 0.01)")
    parser.add_argument("--seed", type=int, help="seed of resamples and subsamples (default 0)")


#: GuardConfig fields the CLI has flags for, and the flags.
_CONFIG_FLAGS = {"alpha": "--alpha", "alpha_batch": "--alpha-batch", "seed": "--seed"}


def _guard_config(
    args: argparse.Namespace, defaults: dict[str, Any] | None = None, *, threads: bool = False
) -> Any:
    """The GuardConfig of a command: its explicit flags (``--threads`` too when ``threads``),
    over the ``--config`` file, over the command's ``defaults``, over GuardConfig's."""
    from synthguard.config import config_from, read_config_file

    names = {**_CONFIG_FLAGS, **({"threads": "--threads"} if threads else {})}
    flags = {key: getattr(args, key) for key in names if getattr(args, key, None) is not None}
    from_file = read_config_file(args.config) if args.config else {}
    where = {key: f"{args.config}: key {key!r}" for key in from_file}
    where.update({key: names[key] for key in flags})  # "--alpha must be less than 1"
    values = {**(defaults or {}), **from_file, **flags}
    return config_from(values, where, args.config or "")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated batch sizes like 64,256,1024; got {text!r}"
        ) from None
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 2; got {text!r}")
    return sizes


#: Exit code of an unexpected (internal) error: neither "accepted" (0), "not accepted" (1) nor a
#: usage or input error (2).
EXIT_INTERNAL = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``synthguard`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "reference":
            return _build(args) if args.reference_command == "build" else _calibrate(args)
        if args.command == "check":
            return _check(args)
        return _bench()
    except (SynthGuardError, OSError) as exc:
        print(f"synthguard: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("synthguard: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: never exit 1 ("not accepted")
        if args.debug:
            traceback.print_exc()
        print(
            f"synthguard: internal error: {type(exc).__name__}: {exc}"
            + ("" if args.debug else " (rerun with --debug for the traceback)"),
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _demo(args: argparse.Namespace) -> int:
    from synthguard.cli._demo._result import format_table, summary_lines
    from synthguard.cli._demo._run import run_demo

    result = run_demo(args.generations, seed=args.seed, out=args.out, progress=not args.no_progress)
    print(format_table(result))
    print()
    print("\n".join(summary_lines(result)))
    print(f"\nreport: {result.out / 'report.html'}; logs: {result.out}/<arm>.jsonl; "
          f"{result.seconds:.0f} s")  # fmt: skip
    return 0


def _build(args: argparse.Namespace) -> int:
    from synthguard.encoders import load_encoder
    from synthguard.reference import Reference
    from synthguard.sources import read_pairs

    check_outputs(
        [("--out", args.out)],
        [*source_inputs(args.input), ("--config", args.config), *encoder_inputs(args.encoder)],
    )
    config = _guard_config(args) if args.config else None  # refused before minutes of work
    batch = read_pairs(args.input, **input_options(args))
    names = None if not args.label_names else [n.strip() for n in args.label_names.split(",")]
    if batch.labels is not None and names is None and not args.ignore_labels:
        raise InvalidInputError(
            f"--label-names is required: {args.input} has class labels (0..{max(batch.labels)}); "
            "name the classes (--label-names zero,one,...) to calibrate the label check, or "
            "pass --ignore-labels to build without them"
        )
    encoder = load_encoder(args.encoder, progress=not args.no_progress)  # the spec is kept
    ref = Reference.build(
        batch.images, batch.captions, encoder=encoder,
        labels=batch.labels if names else None, label_names=names,
        label_templates=args.template, ids=batch.ids, support_size=args.support_size,
    )  # fmt: skip
    if args.calibrate_sizes:
        sizes = ref.calibrate(
            args.calibrate_sizes, config, threads=args.threads, progress=not args.no_progress
        )
        print(f"calibrated batch tests at {', '.join(map(str, sizes))} rows")
    path = ref.save(args.out)
    checks = ", ".join(ref.calibration.names)
    skipped = sum(ref.skipped.values())
    print(f"reference: {ref.stats.n_pairs} pairs, support {ref.n_support}, skipped {skipped}, "
          f"checks {checks} -> {path}")  # fmt: skip
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from synthguard.reference import Reference

    target = args.out or args.reference
    if args.out:  # rewriting the reference itself is this command's purpose; a copy must not
        check_outputs(
            [("--out", args.out)], [("--reference", args.reference), ("--config", args.config)]
        )
    config = _guard_config(args)
    reference = Reference.load(args.reference)
    sizes = reference.calibrate(
        args.sizes, config, threads=args.threads or config.threads,
        device=args.device or config.device or "cpu", progress=not args.no_progress,
    )  # fmt: skip
    path = reference.save(target)
    print(f"calibrated batch tests at {', '.join(map(str, sizes))} rows -> {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from synthguard._threads import available_threads
    from synthguard.encoders import load_encoder
    from synthguard.guard import Guard
    from synthguard.reference import Reference
    from synthguard.sources import detect_kind, read_pairs, write_pairs

    check_outputs(  # before minutes of work, not after
        [("--out", args.out), ("--html", args.html), ("--write-accepted", args.write_accepted)],
        [*source_inputs(args.input), ("--reference", args.reference), ("--config", args.config),
         *encoder_inputs(args.encoder)],
    )  # fmt: skip
    # Offline, the guard may use every core unless --threads or the file says otherwise.
    config = _guard_config(args, {"threads": available_threads()}, threads=True)
    progress = not args.no_progress
    encoder = load_encoder(args.encoder, progress=progress) if args.encoder else None
    reference = Reference.load(args.reference, encoder=encoder)
    if encoder is None and reference.encoder_spec is not None:
        encoder = load_encoder(reference.encoder_spec, progress=progress)
    guard = Guard(reference, config, encoder=encoder)
    batch = read_pairs(args.input, **input_options(args))
    report = guard.check(batch)
    print(report.summary())
    if args.out:
        report.to_json(args.out)
    if args.html:
        report.to_html(args.html, batch)
    if args.write_accepted:
        clean = report.apply(batch)
        if clean is None:
            print("nothing accepted: --write-accepted wrote nothing", file=sys.stderr)
        else:
            write_pairs(clean, args.write_accepted, detect_kind(args.input))
    return 0 if report.accepted else 1


def _version() -> str:
    try:
        return version("synthguard")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        return "unknown (not installed)"


def _bench() -> int:
    from synthguard.cli._bench import run_bench

    print(run_bench())
    return 0
