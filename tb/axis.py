"""Small AXI-Stream helpers shared by the cocotb testbenches (on top of cocotbext-axi)."""

import random
from collections.abc import Iterator, Sequence

from cocotb.triggers import RisingEdge


def random_pause(rng: random.Random, probability: float, burst: int = 0,
                 burst_probability: float = 0.005) -> Iterator[int]:
    """Endless pause pattern for ``set_pause_generator``: 1 (pause) with ``probability``;
    with ``burst``, a run of ``burst`` pauses starts instead with ``burst_probability``, long
    enough to fill every buffer behind the stream (a receiver that stops for a while)."""
    if not 0.0 <= probability < 1.0:
        raise ValueError(f"pause probability must lie in [0, 1), not {probability}")
    if not 0.0 <= burst_probability < 1.0:
        raise ValueError(f"burst probability must lie in [0, 1), not {burst_probability}")
    while True:
        if burst and rng.random() < burst_probability:
            yield from [1] * burst
        else:
            yield int(rng.random() < probability)


def split_frames(words: Sequence[int], lasts: Sequence[int]) -> list[list[int]]:
    """Group ``words`` into frames that end where ``lasts`` is set; the last one must be set."""
    if len(words) != len(lasts):
        raise ValueError(f"{len(words)} words but {len(lasts)} last flags")
    if words and not lasts[-1]:
        raise ValueError("the final word must carry last, or its frame never completes")
    frames, frame = [], []
    for word, last in zip(words, lasts):
        frame.append(word)
        if last:
            frames.append(frame)
            frame = []
    return frames


class HandshakeMonitor:
    """Records the clock cycle of every transfer (``tvalid and tready``) on one interface."""

    def __init__(self, clock, tvalid, tready):
        self.clock, self.tvalid, self.tready = clock, tvalid, tready
        self.cycle = 0
        self.transfers: list[int] = []

    async def run(self) -> None:
        while True:
            await RisingEdge(self.clock)
            self.cycle += 1
            if self.tvalid.value == 1 and self.tready.value == 1:
                self.transfers.append(self.cycle)
