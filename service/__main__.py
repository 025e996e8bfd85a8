"""``python -m rnnstream.service`` (and ``rnnstream serve``): run the server until SIGTERM or SIGINT."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from rnnstream.service.config import Config, from_args


async def _run(config: Config) -> None:
    from rnnstream.service.gcpolicy import collect_less
    from rnnstream.service.server import Server  # after logging is set up; imports the engine

    loop = asyncio.get_running_loop()
    # Ctrl-C during the start-up cancels it at once. Through the loop's own handler, not
    # asyncio.run's: the kernel may hand the signal to another thread (the compile's), and
    # only the loop's wakeup fd then wakes the loop before its next timer.
    loop.add_signal_handler(signal.SIGINT, asyncio.current_task().cancel)
    server = Server(config)
    try:
        await server.start()
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None  # serve(): "interrupted during start-up", exit 130
    collect_less()  # a process-wide choice: only the server process makes it
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def serve(argv: list[str] | None = None) -> int:
    """Parse flags (and RNNSTREAM_* variables), serve, return the exit status."""
    config = from_args(argv)
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from rnnstream.service.server import StartupError
    try:
        asyncio.run(_run(config))
    except StartupError as e:
        logging.getLogger("rnnstream.service").error("%s", e)
        return 2
    except KeyboardInterrupt:
        # Only a start-up can get here (once serving, SIGINT drains and checkpoints): nothing
        # was served yet, and the kernel compile may still run in its thread, so leave now
        # rather than wait for it.
        logging.getLogger("rnnstream.service").info("interrupted during start-up; nothing was served, nothing to save")
        logging.shutdown()
        sys.stderr.flush()
        os._exit(130)
    return 0


if __name__ == "__main__":
    sys.exit(serve())
