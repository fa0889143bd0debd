"""moto's S3 server in its own process on a port the OS picks; prints ``PORT <n>`` once it listens.

Run: ``python -m tests.fakes.moto_s3``. Its own process (not in-process threads): delta-rs calls
that hold the GIL would starve an in-process server. Binding port 0 leaves no window in which
another process could take a port chosen in advance.
"""

from __future__ import annotations

import sys
import threading

from moto.server import ThreadedMotoServer


def main() -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(f"PORT {server.get_host_and_port()[1]}", flush=True)
    threading.Event().wait()  # until the test session terminates it


if __name__ == "__main__":
    sys.exit(main())
