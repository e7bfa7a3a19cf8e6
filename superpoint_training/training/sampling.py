"""The training sample order as a function of (seed, iteration): a run resumed at iteration N draws
the same images, with the same augmentation, as an uninterrupted run did after N iterations.

- :class:`SeededOrder` is an endless sampler: epoch ``e`` is a permutation seeded by ``(seed, e)``;
  each process (DDP rank) takes every ``world``-th index of it, cut to whole batches. Iteration ``i``
  is batch ``i % batches_per_epoch`` of epoch ``i // batches_per_epoch``, so starting at any
  iteration needs no state but ``(seed, iteration)``, and no epoch boundary restarts the workers.
- Each index comes with its own seed; :class:`SeededSamples` seeds torch, numpy and ``random`` with it
  before reading the sample, so per-sample augmentation in DataLoader workers does not depend on which
  worker read it or how many samples that worker read before.
"""

from __future__ import annotations

import atexit
import random
import signal
import weakref
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def mixed_seed(*parts: int) -> int:
    """A 63-bit seed from integers; distinct tuples give independent streams (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class SeededOrder(Sampler):
    """Endless ``(index, sample_seed)`` pairs for one process, starting at ``start_iteration``."""

    def __init__(self, size: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1,
                 start_iteration: int = 0):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = (size // world_size) // batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(f"{size} samples give no batch of {batch_size} for each of {world_size} processes")
        self.start_iteration = start_iteration

    def position(self, iteration: int) -> dict[str, int]:
        """Where ``iteration`` (the number of batches already drawn) starts: epoch and batch in it."""
        return {"epoch": iteration // self.batches_per_epoch, "batch": iteration % self.batches_per_epoch}

    def epoch_indices(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(mixed_seed(self.seed, epoch))
        order = torch.randperm(self.size, generator=generator)[self.rank :: self.world_size]
        return order[: self.batches_per_epoch * self.batch_size].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        where = self.position(self.start_iteration)
        epoch, first = where["epoch"], where["batch"] * self.batch_size
        while True:
            indices = self.epoch_indices(epoch)
            for position in range(first, len(indices)):
                yield indices[position], mixed_seed(self.seed, epoch, self.rank, position)
            epoch, first = epoch + 1, 0


class SeededSamples(Dataset):
    """``dataset[index]`` read with the global random generators seeded by the sample's own seed."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        return self.dataset[index]


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader worker start: leave SIGINT/SIGTERM to the main process, which saves and stops.

    A signal sent to the whole process group (Ctrl+C, ``timeout``, Slurm, ``docker stop``) would
    otherwise kill the workers first and the main process would die on "worker killed by signal".
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


# Iterators whose workers ignore SIGTERM: multiprocessing's exit handler would terminate() then join
# them forever, so they are shut down (through their queues) before it runs: atexit handlers run in
# reverse order of registration, and multiprocessing registered its own when torch imported it.
_LIVE_ITERATORS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _shutdown_live_workers() -> None:
    for iterator in list(_LIVE_ITERATORS):
        iterator._shutdown_workers()


class StopSafeLoader(DataLoader):
    """A DataLoader whose worker processes ignore SIGINT/SIGTERM from their first instruction on.

    The signals are blocked while the workers are started (a child inherits the blocked mask), and
    each worker sets them to ignored before unblocking them (:func:`ignore_stop_signals`); a signal
    that arrives meanwhile reaches the main process when it unblocks them. The workers end when the
    loader is done with them (:meth:`close`, the end of an epoch, or at exit), never by a signal.
    """

    def __init__(self, *args, **kwargs):
        if kwargs.get("num_workers", 0) > 0 and kwargs.get("worker_init_fn") is None:
            kwargs["worker_init_fn"] = ignore_stop_signals
        super().__init__(*args, **kwargs)

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        try:
            iterator = super().__iter__()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if hasattr(iterator, "_shutdown_workers"):
            _LIVE_ITERATORS.add(iterator)
        return iterator

    def close(self) -> None:
        """Stop the persistent workers now (they ignore the signals that would otherwise end them)."""
        iterator = self._iterator  # DataLoader's own: the persistent workers' iterator, or None
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self._iterator = None
