"""The ``veil`` command.

Subcommands are argparse subparsers, each leaf setting a ``handler`` that takes the parsed arguments
and returns the exit code::

    veil bench onion [--json PATH] [--png PATH] [--repeat N] [--batch N] [--sizes N,N] [--quick]
    veil bench network [--nodes N[,N...]] [--messages N] [--rounds N] [--concurrency N]
                       [--json PATH] [--png PATH] [--quick]
    veil node init --data-dir DIR [--listen HOST:PORT]
    veil node run --data-dir DIR
    veil authority init --data-dir DIR --listen HOST:PORT --link-listen HOST:PORT [--name NAME]
    veil authority run --data-dir DIR --network FILE
    veil devnet up [--nodes N] [--dir DIR] [--detach]
    veil devnet status [--dir DIR] [--json]
    veil devnet down [--dir DIR]
    veil community init --data-dir DIR [--url URL] [--listen HOST:PORT]
    veil community run --data-dir DIR
    veil community add-room --data-dir DIR TOKEN NAME [--description TEXT] [--read-only]
    veil community add-moderator --data-dir DIR USER [--room TOKEN] [--admin]
    veil community rooms --data-dir DIR

A new command group (``veil node ...``, ``veil devnet ...``) is a function
``_add_<group>(commands)`` called from :func:`build_parser`. Handlers import what they need when
they run: importing this module does no work.

Exit codes: 0 success, 1 a failure reported in one line on stderr (an unwritable output file, for
example), 2 a usage error (argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]
_R = TypeVar("_R")


class CommandError(Exception):
    """A failure to report as one line on stderr, with exit code 1."""


def main(argv: list[str] | None = None) -> int:
    """Runs ``veil`` with ``argv`` (default: ``sys.argv[1:]``) and returns the exit code."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            # argparse gives optional positionals their value before the options that follow
            # them: `veil send ID --file F TEXT` leaves TEXT over; a command that allows it
            # (``text_after_options``) takes one such word as its text.
            late = getattr(args, "text_after_options", False) and args.text is None
            if not late or len(extra) != 1 or extra[0].startswith("-"):
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            args.text = extra[0]
    except SystemExit as exit_:  # usage errors (2), --help and --version (0)
        return exit_.code if isinstance(exit_.code, int) else 1
    handler: Handler = args.handler
    try:
        return handler(args)
    except CommandError as error:
        print(f"veil: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("veil: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (`veil ... | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole ``veil`` command."""
    from veil import __version__  # noqa: PLC0415  (a metadata lookup, at most)

    parser = argparse.ArgumentParser(
        prog="veil",
        description="Veil: an onion-routed, end-to-end encrypted messenger network.",
    )
    parser.add_argument("--version", action="version", version=f"veil {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    commands.required = True
    _add_bench(commands)
    _add_node(commands)
    _add_authority(commands)
    _add_client(commands)
    _add_devnet(commands)
    _add_community(commands)
    return parser


def _add_client(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from veil.client.cli import add_client_commands  # noqa: PLC0415  (argparse wiring only)

    add_client_commands(commands)


def _add_node(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from veil.node.cli import add_node_commands  # noqa: PLC0415  (argparse wiring only)

    add_node_commands(commands)


def _add_authority(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from veil.authority.cli import add_authority_commands  # noqa: PLC0415  (argparse wiring only)

    add_authority_commands(commands)


def _add_devnet(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from veil.devnet import add_devnet_commands  # noqa: PLC0415  (argparse wiring only)

    add_devnet_commands(commands)


def _add_community(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from veil.community.cli import add_server_commands  # noqa: PLC0415  (argparse wiring only)

    community = commands.add_parser(
        "community",
        help="communities (open groups): join and moderate rooms, or run a community server",
        description="Communities: open groups served by a community server that clients reach "
        "through onion requests (docs/community.md).",
    )
    actions = community.add_subparsers(dest="community_action", required=True, metavar="ACTION")
    add_server_commands(actions)
    from veil.client.community_cli import add_community_commands  # noqa: PLC0415

    add_community_commands(actions)


# --------------------------------------------------------------------------------------------------
# Argument types


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


_SIZE_SUFFIXES = {"kib": 1024, "k": 1024, "mib": 1024 * 1024, "m": 1024 * 1024, "b": 1}
_MAX_PAYLOAD = 8 * 1024 * 1024


def _size(text: str) -> int:
    """``1024``, ``1KiB``, ``10k``: a payload size in bytes."""
    cleaned = text.strip().lower().replace(" ", "")
    multiplier = 1
    for suffix, factor in _SIZE_SUFFIXES.items():
        if cleaned.endswith(suffix) and cleaned[: -len(suffix)]:
            cleaned, multiplier = cleaned[: -len(suffix)], factor
            break
    try:
        value = int(cleaned) * multiplier
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if not 0 <= value <= _MAX_PAYLOAD:
        raise argparse.ArgumentTypeError(f"size out of range 0..{_MAX_PAYLOAD}: {text!r}")
    return value


def _sizes(text: str) -> tuple[int, ...]:
    """A comma-separated list of sizes: ``1024,10240`` or ``1KiB,10KiB``."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected one or more sizes, such as 1024,10240")
    sizes = tuple(_size(part) for part in parts)
    return tuple(dict.fromkeys(sizes))  # drop repeats, keep the order


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}: {text!r}")
        return value

    return parse


# `veil bench network`'s limits, here so that parsing imports no benchmark (checked again there).
_NETWORK_NODES = (3, 100)
_NETWORK_MESSAGES = 1_000_000
_NETWORK_ROUNDS = 100
_NETWORK_CONCURRENCY = 1024


def _node_counts(text: str) -> tuple[int, ...]:
    """A comma-separated list of devnet sizes: ``6,12,24``."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected one or more node counts, such as 6,12,24")
    count = _bounded_int(*_NETWORK_NODES)
    return tuple(dict.fromkeys(count(part) for part in parts))  # drop repeats, keep the order


def _output_path(text: str) -> Path:
    if not text:
        raise argparse.ArgumentTypeError("empty path")
    return Path(text)


def _check_writable(path: Path, option: str) -> None:
    """Fails early, before a long run, if ``path`` clearly cannot be written."""
    parent = path.parent
    if path.is_dir():
        raise CommandError(f"cannot write {option} {path}: is a directory")
    if not parent.is_dir():
        raise CommandError(f"cannot write {option} {path}: no such directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CommandError(f"cannot write {option} {path}: permission denied")


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return " ".join(str(error).split()) or type(error).__name__


# --------------------------------------------------------------------------------------------------
# veil bench ...


def _add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = commands.add_parser(
        "bench",
        help="run a benchmark",
        description="Run one of Veil's benchmarks and report it as a table (and JSON, PNG).",
    )
    benchmarks = bench.add_subparsers(title="benchmarks", dest="benchmark", metavar="BENCHMARK")
    benchmarks.required = True

    onion = benchmarks.add_parser(
        "onion",
        help="peeling one onion layer: primitive floor, plain Python, Rust, Rust batch",
        description=(
            "Peel the same prepared onion with four candidates (floor: the PyNaCl primitives "
            "alone; python: a plain-Python peel; rust: veil.crypto.peel_onion; rust-batch: "
            "veil.crypto.peel_onion_batch on all cores), interleaved over repetitions, and "
            "check the targets rust/floor <= 1.10, batch speed-up >= 1.7, rust faster than python."
        ),
    )
    onion.add_argument("--json", type=_output_path, metavar="PATH", help="write the report as JSON")
    onion.add_argument(
        "--png", type=_output_path, metavar="PATH", help="draw a bar chart (needs matplotlib)"
    )
    onion.add_argument(
        "--repeat",
        type=_positive_int,
        metavar="N",
        help="repetitions (default 15; 3 with --quick)",
    )
    onion.add_argument(
        "--batch",
        type=_positive_int,
        default=256,
        metavar="N",
        help="onions per peel_onion_batch call (default 256)",
    )
    onion.add_argument(
        "--sizes",
        type=_sizes,
        default=(1024, 10240),
        metavar="N[,N...]",
        help="payload sizes in bytes, comma-separated; KiB suffix allowed (default 1024,10240)",
    )
    onion.add_argument(
        "--quick", action="store_true", help="a short, rough run (for tests and smoke checks)"
    )
    onion.set_defaults(handler=_bench_onion)

    network = benchmarks.add_parser(
        "network",
        help="the network end to end: stores through onion requests on a devnet of N nodes",
        description=(
            "For each N: start a devnet of N nodes (veil devnet up --detach), store 1 KiB messages "
            "through three-hop onion requests from a client process, each checked against three "
            "signed results of the recipient's swarm, read a sample back, and bring the devnet "
            "down. Reports messages/s, p50/p99 latency, node CPU per message (also beyond the "
            "idle nodes' own use, and in peel units: one single-core v1 onion peel, measured in "
            "the same run), client CPU per message, and the nodes' context switches and durable "
            "commits per message (with the jobs each commit carried). A wrong result voids the run."
        ),
    )
    network.add_argument(
        "--nodes",
        type=_node_counts,
        default=(6, 12, 24),
        metavar="N[,N...]",
        help=f"devnet sizes, comma-separated, {_NETWORK_NODES[0]} to {_NETWORK_NODES[1]} "
        "(default 6,12,24)",
    )
    network.add_argument(
        "--messages",
        type=_bounded_int(1, _NETWORK_MESSAGES),
        metavar="N",
        help="messages per round (default 2000; 48 with --quick)",
    )
    network.add_argument(
        "--rounds",
        type=_bounded_int(1, _NETWORK_ROUNDS),
        metavar="N",
        help="timed rounds per devnet size (default 3; 1 with --quick)",
    )
    network.add_argument(
        "--concurrency",
        type=_bounded_int(1, _NETWORK_CONCURRENCY),
        default=32,
        metavar="N",
        help="stores in flight (default 32)",
    )
    network.add_argument(
        "--json", type=_output_path, metavar="PATH", help="write the report as JSON"
    )
    network.add_argument(
        "--png", type=_output_path, metavar="PATH", help="draw bar charts (needs matplotlib)"
    )
    network.add_argument(
        "--quick",
        action="store_true",
        help="a short, rough run: a few dozen messages, one round, a short warm-up and idle",
    )
    network.set_defaults(handler=_bench_network)


def _bench_onion(args: argparse.Namespace) -> int:
    json_path: Path | None = args.json
    png_path: Path | None = args.png
    _check_outputs(json_path, png_path)

    try:
        from veil.benchmarks import onion  # noqa: PLC0415
    except ImportError as error:
        raise CommandError(f"cannot load the benchmark: {_one_line(error)}") from None

    if args.quick:
        config = onion.Config.quick(sizes=args.sizes, batch=args.batch)
        if args.repeat is not None:
            config = onion.Config(
                sizes=config.sizes,
                batch=config.batch,
                repeat=args.repeat,
                target_seconds=config.target_seconds,
            )
    else:
        config = onion.Config(
            sizes=args.sizes,
            batch=args.batch,
            repeat=args.repeat if args.repeat is not None else onion.DEFAULT_REPEAT,
        )

    progress = _progress if sys.stderr.isatty() else None
    try:
        report = onion.run(config, progress=progress)
    except onion.ResultMismatchError as error:
        raise CommandError(f"wrong result, benchmark void: {error}") from None
    if progress is not None:
        _progress("")
    print(onion.format_table(report))

    return _write_outputs(
        ((json_path, "--json", onion.write_json), (png_path, "--png", onion.write_png)), report
    )


def _write_outputs(
    outputs: tuple[tuple[Path | None, str, Callable[[_R, Path], None]], ...], report: _R
) -> int:
    """Writes ``report`` to each output given; 1 if one could not be written (said on stderr)."""
    status = 0
    for path, option, write in outputs:
        if path is None:
            continue
        try:
            write(report, path)
        except (OSError, ValueError) as error:
            print(f"veil: cannot write {option} {path}: {_one_line(error)}", file=sys.stderr)
            status = 1
    return status


def _check_outputs(json_path: Path | None, png_path: Path | None) -> None:
    """Refuses, before a run, output paths that cannot be written and --png without matplotlib."""
    if json_path is not None:
        _check_writable(json_path, "--json")
    if png_path is not None:
        _check_writable(png_path, "--png")
        try:
            import matplotlib  # noqa: F401, PLC0415
        except ImportError:
            raise CommandError("--png needs matplotlib (pip install 'veil[bench]')") from None


def _bench_network(args: argparse.Namespace) -> int:
    json_path: Path | None = args.json
    png_path: Path | None = args.png
    _check_outputs(json_path, png_path)

    try:
        from veil.benchmarks import network  # noqa: PLC0415
    except ImportError as error:
        raise CommandError(f"cannot load the benchmark: {_one_line(error)}") from None

    try:
        if args.quick:
            config = network.Config.quick(
                nodes=args.nodes,
                messages=args.messages,
                rounds=args.rounds,
                concurrency=args.concurrency,
            )
        else:
            config = network.Config(
                nodes=args.nodes,
                messages=args.messages or network.DEFAULT_MESSAGES,
                rounds=args.rounds or network.DEFAULT_ROUNDS,
                concurrency=args.concurrency,
            )
    except ValueError as error:
        raise CommandError(str(error)) from None

    progress = _progress if sys.stderr.isatty() else None
    try:
        report = network.run(config, progress=progress)
    except network.WrongResultError as error:
        raise CommandError(f"wrong result, benchmark void: {_with_notes(error)}") from None
    except network.NetworkBenchError as error:
        raise CommandError(f"network benchmark failed: {_with_notes(error)}") from None
    finally:
        if progress is not None:
            _progress("")
    print(network.format_table(report))

    return _write_outputs(
        ((json_path, "--json", network.write_json), (png_path, "--png", network.write_png)), report
    )


def _with_notes(error: BaseException) -> str:
    notes = getattr(error, "__notes__", ())
    return "; ".join([_one_line(error), *(" ".join(str(note).split()) for note in notes)])


def _progress(message: str) -> None:
    sys.stderr.write(f"\r\033[K{message}" if message else "\r\033[K")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
