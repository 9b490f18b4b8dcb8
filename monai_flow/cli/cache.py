"""``monai-flow cache``: list or clear the adapted weights that ``denoise --adapt`` keeps."""

from __future__ import annotations

import argparse

from .errors import EXIT_OK

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Inspect or empty the cache of adapted weights (denoise --adapt). Entries are keyed by the
content of the input they were adapted to, the starting weights and the adaptation settings, so
a rerun on the same input skips training. Location: $MONAI_FLOW_CACHE, else
$XDG_CACHE_HOME/monai-flow, else ~/.cache/monai-flow; size cap $MONAI_FLOW_CACHE_MAX_BYTES
(default 2 GiB), least recently used entries are removed first."""


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser("cache", parents=parents, help="list or clear the adapted-weights cache",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("list", "clear", "path"), help="list entries, remove them all, or print the folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monai_flow.adaptation import AdaptationCache

    cache = AdaptationCache()
    if args.action == "path":
        print(cache.folder)
    elif args.action == "clear":
        print(f"removed {cache.clear()} adapted weight file(s) from {cache.folder}")
    else:
        entries = cache.entries()
        for e in entries:
            print(f"{e['key'][:12]}  {e['bytes'] / 2**20:7.1f} MiB  {e.get('created', '?')}  "
                  f"{e.get('iterations', '?')} it  {e.get('input', '?')}")
        total = sum(e["bytes"] for e in entries)
        print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {total / 2**20:.1f} MiB of "
              f"{cache.max_bytes / 2**20:.0f} MiB, in {cache.folder}")
    return EXIT_OK
