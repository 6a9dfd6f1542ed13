"""Job queues: the protocol (`base`) and its backends (`memory`; Redis Streams later)."""
