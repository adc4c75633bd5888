"""Acknowledgements in read order: the watermark to store is the state after the last
batch of the longest acknowledged prefix, so a batch acked early waits for the ones read
before it, and a nack holds the watermark where it was for the rest of the run."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Acks:
    """Batches in read order; the watermark is the state after the last batch of the
    longest acknowledged prefix. A nack stops the prefix for the rest of the run."""

    next_seq: int = 0
    committed: int = 0  # batches [0, committed) are acknowledged and stored
    states: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)
    nacked: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, state: dict[str, Any] | None) -> int:
        with self.lock:
            seq = self.next_seq
            self.states[seq] = state
            self.next_seq += 1
            return seq

    def ack(self, seq: int) -> dict[str, Any] | None:
        """The state to store now, or None when nothing new is acknowledged in order."""
        with self.lock:
            self.acked.add(seq)
            latest: dict[str, Any] | None = None
            while not self.nacked and self.committed in self.acked:
                latest = self.states.pop(self.committed) or latest
                self.acked.discard(self.committed)
                self.committed += 1
            return latest

    @property
    def pending(self) -> bool:
        return self.committed < self.next_seq


__all__ = ["Acks"]
