"""The shipped model's accuracy table (README, "The shipped model"): PublicTest and PrivateTest, on the equalized
training copy and on the raw test copy, with PyTorch and the int8 engine, each with and without test-time
augmentation, and PrivateTest's recall per class.

    python benchmarks/accuracy_table.py trained_models/resnet50.safetensors \
        --data ../shared/data/fer2013.zip --raw ../shared/data/fer2013-test-raw.zip

Every figure is `python -m fer evaluate`'s (the same `fer.evaluate.evaluate`), with the data read once per
copy. Writes benchmarks/results/accuracy_<weights>.json and prints the Markdown table. PublicTest chose the
epoch; PrivateTest is scored here, once, and chooses nothing.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from fer.datasets import load_split, split_name
from fer.evaluate import evaluate
from fer.inference import face_of, load_engine

RESULTS = Path(__file__).parent / "results"
COLUMNS = (("torch", False), ("torch", True), ("onnx-int8", False), ("onnx-int8", True))


def header(column) -> str:
    engine, tta = column
    name = "PyTorch" if engine == "torch" else "int8 ONNX Runtime"
    return name + (" + TTA (10 views)" if tta else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--data", required=True, help="FER-2013, equalized (the training copy)")
    parser.add_argument("--raw", help="the raw test copy (fer2013-test-raw.zip)")
    parser.add_argument("--engines", nargs="+", default=["torch", "onnx-int8"])
    args = parser.parse_args()

    engines = {name: load_engine(args.weights, name) for name in args.engines}
    face = face_of(list(engines.values())[0])
    copies = {"equalized training copy": args.data, **({"raw": args.raw} if args.raw else {})}
    rows = []
    for pixels, source in copies.items():
        for split in ("public", "private"):
            faces = load_split(source, split, face=face)
            for engine, tta in COLUMNS:
                if engine not in engines:
                    continue
                result = evaluate(engines[engine], faces, tta=tta)
                rows.append({"split": split, "pixels": pixels, "engine": engine, "tta": tta, "n": result["n"],
                             "accuracy": result["accuracy"], "per_class": result["per_class"]})
                print(f"{split_name(split)} {pixels} {header((engine, tta))}: {result['accuracy']:.2%}", flush=True)

    out = RESULTS / f"accuracy_{args.weights.stem}.json"
    out.write_text(json.dumps({"weights": str(args.weights), "machine": platform.processor() or platform.machine(),
                               "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows},
                              indent=1) + "\n")
    columns = [c for c in COLUMNS if c[0] in engines]
    print("\n| split | pixels | " + " | ".join(header(c) for c in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for pixels in copies:
        for split in ("public", "private"):
            cells = [next(f"{r['accuracy']:.2%}".replace("%", " %") for r in rows if (r["split"], r["pixels"],
                          r["engine"], r["tta"]) == (split, pixels, *c)) for c in columns]
            name = "PublicTest (chose the epoch)" if split == "public" else "**PrivateTest**"
            print(f"| {name} | {pixels} | " + " | ".join(cells) + " |")
    first = next(r for r in rows if r["split"] == "private" and not r["tta"])
    recall = ", ".join(f"{c} {v:.2f}" for c, v in first["per_class"].items() if v is not None)
    print(f"\nPrivateTest recall per class ({first['pixels']}, {header((first['engine'], False))}): {recall}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
