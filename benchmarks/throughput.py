"""Throughput of the shipped model and of training, on this machine.

    python benchmarks/throughput.py inference [--weights PATH]      # CPU img/s at batch 1 and 64, ms per photo
    python benchmarks/throughput.py train --stem imagenet           # training img/s (synthetic batches)

Prints one JSON object; the README's tables quote it with the machine it ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
import torch.nn.functional as F

from fer.data import AugmentConfig, augment, normalize
from fer.evaluate import autocast_for, predict_probs
from fer.model import STEMS, ModelConfig, build_model
from fer.predict import predict_image
from fer.train import pick_device
from fer.weights import REPO_ROOT, load_model


def timed(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def inference(args) -> dict:
    from PIL import Image
    model = load_model(args.weights)
    images = torch.randint(0, 256, (64, 48, 48), dtype=torch.uint8)
    one = images[:1]
    photo = Image.open(REPO_ROOT / "photos_to_predict" / "grace_hopper.jpg")
    return {"benchmark": "cpu inference", "machine": machine(torch.device("cpu")),
            "threads": torch.get_num_threads(),
            "batch1_images_per_second": 1 / timed(lambda: predict_probs(model, one, device="cpu"), 20),
            "batch64_images_per_second": 64 / timed(lambda: predict_probs(model, images, device="cpu"), 5),
            "photo_ms": 1000 * timed(lambda: predict_image(photo, model), 10),
            "photo_tta_ms": 1000 * timed(lambda: predict_image(photo, model, tta=True), 5)}


def train_throughput(args) -> dict:
    device = pick_device(args.device)
    model = build_model(ModelConfig(stem=args.stem)).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    images = torch.randint(0, 256, (args.batch_size, 48, 48), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 7, (args.batch_size,), device=device)
    generator = torch.Generator(device=device).manual_seed(0)

    def step():
        x = augment(normalize(images), AugmentConfig(), generator).contiguous(memory_format=torch.channels_last)
        with autocast_for(device):
            loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    seconds = timed(step, args.steps)
    return {"benchmark": "training", "machine": machine(device), "stem": args.stem, "batch_size": args.batch_size,
            "images_per_second": args.batch_size / seconds, "seconds_per_epoch": 28709 * seconds / args.batch_size}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    i = sub.add_parser("inference")
    i.add_argument("--weights", default=None)
    t = sub.add_parser("train")
    t.add_argument("--stem", choices=STEMS, default="imagenet")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--steps", type=int, default=5)
    t.add_argument("--device", default="auto")
    args = parser.parse_args()
    result = inference(args) if args.what == "inference" else train_throughput(args)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
