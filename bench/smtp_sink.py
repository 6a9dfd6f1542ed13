"""A counting SMTP sink (aiosmtpd) for the email_send benchmark: python -m bench.smtp_sink PORT.
Prints 'ready', then the number of messages taken on each line it reads from stdin."""

from __future__ import annotations

import sys
from typing import Any

from aiosmtpd.controller import Controller


class Counter:
    messages = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        return "250 2.0.0 accepted"


def main() -> None:
    counter = Counter()
    controller = Controller(counter, hostname="127.0.0.1", port=int(sys.argv[1]))
    controller.start()
    print("ready", flush=True)
    for _ in sys.stdin:
        print(counter.messages, flush=True)
    controller.stop()


if __name__ == "__main__":
    main()
