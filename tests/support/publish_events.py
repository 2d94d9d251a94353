"""Publish ledger events from a separate process: ``python -m tests.support.publish_events N``.

Each event is registered in its own transaction, as a web request would; progress (how many
committed) is written to ``--progress`` so a test can act in the middle of the run.
"""

import argparse
import os
import time
from pathlib import Path

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("count", type=int)
    parser.add_argument("--prefix", default="k")
    parser.add_argument("--progress", type=Path, required=True)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between events")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from tasks.transaction import register_event  # noqa: PLC0415 (after django.setup())
    from tests.support.ledger.handlers import LedgerEvent  # noqa: PLC0415 (after django.setup())

    started = time.monotonic()
    for i in range(args.count):
        register_event(LedgerEvent(key=f"{args.prefix}{i}"))
        if i % 10 == 9 or i == args.count - 1:
            # Write then rename, so a reader never sees a half-written number.
            partial = args.progress.with_suffix(".tmp")
            partial.write_text(str(i + 1))
            partial.replace(args.progress)
        if args.pause:
            time.sleep(args.pause)
    print(f"published {args.count} in {time.monotonic() - started:.1f}s", flush=True)


if __name__ == "__main__":
    main()
