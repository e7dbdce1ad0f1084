"""The command line's entry point: `supervisor.py [options]` starts the service (config and
start-up checks, `--sim`'s simulator, then `Supervisor.run`); `supervisor.py status | export |
keygen` go to their own modules. It owns what is refused before any actor starts (a bad config,
CURVE keys missing, unknown `--actors`, a second copy) with one line and exit status 2; it never
watches an actor itself (supervisor.py does).
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path

import msgspec

from . import cli, curve, display, logfile
from . import config as cfg
from .locks import StartError
from .log import Logger
from .supervisor import Supervisor, actor_names, take_locks


def keygen_main(argv: list[str]) -> int:
    """`supervisor.py keygen DIR [--client NAME]`: the CURVE keys of a two-host setup (curve.py)."""
    import argparse

    p = argparse.ArgumentParser(prog="supervisor.py keygen",
                                description="Make CURVE keys: the service host's pair, and with --client "
                                            "a key bundle for one downloader host (authorized at once).")
    p.add_argument("dir", help="keys directory (created mode 0700)")
    p.add_argument("--client", metavar="NAME", help="make DIR/NAME/, the bundle to copy to that host")
    args = p.parse_args(argv)
    try:
        written = curve.keygen(args.dir, args.client)
    except (curve.CurveKeyError, OSError) as exc:
        print(f"kl-actors: keygen: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    if args.client:
        print(f"copy {Path(args.dir) / args.client}/ to host {args.client} and run there: python supervisor.py "
              f"--connect THIS_HOST --keys DIR_ON_THAT_HOST --actors downloader-3,downloader-4")
    return 0


def remote_names(wanted: list[str]) -> str:
    """What is wrong with the actors asked for on a downloader host ('' if nothing): only
    downloaders run there, and they must be named (their names show in the service's log)."""
    if not wanted:
        return "--connect needs --actors naming the downloaders this host runs, e.g. downloader-3,downloader-4"
    other = [n for n in wanted if not re.fullmatch(r"downloader-[1-9][0-9]{0,3}", n)]
    if other:
        return f"--connect runs downloaders only (downloader-N), not {', '.join(other)}"
    return ""


def check_keys(config: cfg.Config) -> str:
    """A clear start error ('' if fine) when remote downloaders are configured without usable keys."""
    r = config.remote
    try:
        if r.listen:
            curve.check_server(r.keys_dir)
        elif r.connect:
            curve.check_client(r.keys_dir)
    except curve.CurveKeyError as exc:
        return f"CURVE keys: {exc}; make them with `python supervisor.py keygen DIR [--client NAME]`"
    return ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keygen"]:
        return keygen_main(argv[1:])
    if argv[:1] == ["export"]:
        from .export import export_main  # pyarrow only for the export

        return export_main(argv[1:])
    if argv[:1] == ["status"]:
        from . import status  # the operator's view (status.py); reads, never starts anything
        return status.main(argv[1:])
    args = cli.parser().parse_args(argv)
    try:
        config = cfg.resolve_endpoints(cli.effective_config(args))
    except cfg.ConfigError as exc:
        print(f"kl-actors: config error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(msgspec.to_builtins(config), indent=2))
        return 0
    problem = check_keys(config)
    if problem:
        print(f"kl-actors: {problem}", file=sys.stderr)
        return 2
    names = actor_names(config)
    if config.remote.connect:
        wanted = [n.strip() for n in (args.actors or "").split(",") if n.strip()]
        problem = remote_names(wanted)
        if problem:
            print(f"kl-actors: {problem}", file=sys.stderr)
            return 2
        names = wanted
    elif args.actors:
        wanted = [n.strip() for n in args.actors.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            print(f"kl-actors: --actors: unknown actor(s) {', '.join(unknown)}; this config has "
                  f"{', '.join(names)}", file=sys.stderr)
            return 2
        names = wanted
    with contextlib.ExitStack() as stack:
        try:
            take_locks(stack, config, names)
        except StartError as exc:
            print(f"kl-actors: {exc}", file=sys.stderr, flush=True)
            return 2
        try:
            terminal, log_stream = display.for_service(config, sys.stderr, stack)
        except OSError as exc:
            print(f"kl-actors: the log file {logfile.log_path(config)}: cannot open: {exc.strerror}",
                  file=sys.stderr)
            return 2
        if args.sim:
            config = stack.enter_context(_with_simulator(config, args.sim_symbols, log_stream))
        try:
            return Supervisor(config, names, log_stream, terminal).run()
        except (cfg.ConfigError, StartError) as exc:
            print(f"kl-actors: {exc}", file=sys.stderr)
            return 2
    return 0


@contextlib.contextmanager
def _with_simulator(config: cfg.Config, n_symbols: int, log_stream=None):
    """Start the bundled simulator on loopback and point the exchange URLs at it."""
    from .sim.process import SimProcess

    # die_with_parent: a kill -9 of the supervisor must not leave the simulator serving.
    with SimProcess(symbols=n_symbols, die_with_parent=True) as sim:
        exchange = msgspec.structs.replace(config.exchange, rest_url=sim.rest_url, ws_url=sim.ws_url)
        # The simulator's own archive unless one was named; a simulator without one: no archive.
        if config.archive.enabled and not config.archive.base_url:
            config = msgspec.structs.replace(config, archive=msgspec.structs.replace(
                config.archive, base_url=getattr(sim, "archive_url", "") or ""))
        Logger("supervisor", stream=log_stream).info("simulator_started", rest_url=sim.rest_url, ws_url=sim.ws_url,
                                  archive_url=cfg.archive_url(config) or "off")
        yield msgspec.structs.replace(config, exchange=exchange)
