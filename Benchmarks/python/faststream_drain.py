#!/usr/bin/env python3
"""The Python peer for scripts/bench: a FastStream (aio-pika) subscriber that drains an existing
queue with the given prefetch and acks each message after its (empty) handler returns, as warren
does with ack_policy nack_on_error. Per-message logging is off, as in warren's benchmark config.
Runs until SIGTERM/SIGINT; scripts/bench times it from the broker's side.

    faststream_drain.py URL QUEUE PREFETCH
"""
import asyncio
import sys

from faststream import AckPolicy, FastStream
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue


def main() -> None:
    url, queue, prefetch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    broker = RabbitBroker(url, logger=None)

    @broker.subscriber(
        RabbitQueue(queue, declare=False),
        channel=Channel(prefetch_count=prefetch),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    async def handle(body: bytes) -> None:
        return None

    asyncio.run(FastStream(broker, logger=None).run())


if __name__ == "__main__":
    main()
