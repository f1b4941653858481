"""``convzoo explore [RUN]``: the interactive explorer on this machine's loopback address."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError


class MissingExtra(UserError):
    """The explorer's packages are not installed."""


def cmd_explore(args: argparse.Namespace) -> None:
    try:
        from ..explore import open_server
    except ImportError as exc:
        raise MissingExtra(f"convzoo explore needs the explore extra ({exc.name} is missing): "
                           "pip install 'convzoo[explore]'") from None
    server = open_server(args.run_dir, device=args.device, data_dir=args.data_dir, host=args.host, port=args.port,
                         allow_remote=args.allow_remote)
    if server.remote:
        print(f"warning: the explorer listens on {args.host}, reachable from other machines; anyone with the "
              "address below can use it", file=sys.stderr)
    what = f"the run {args.run_dir}" if args.run_dir else "the operations (give a run directory to look inside one)"
    print(f"convzoo explore: {what}\nopen {server.address}\n(Ctrl-C stops it)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(server.address)
    server.serve()


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("explore", help="a local web page: the operations live, and a trained run from inside")
    p.add_argument("run_dir", nargs="?", help="a finished run directory (optional)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other machines can reach (the secret in the address still guards it)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", help="directory with the Fashion-MNIST files for the test images (default: the run's)")
    p.add_argument("--open", action="store_true", help="open the address in the default browser")
    p.set_defaults(func=cmd_explore)
