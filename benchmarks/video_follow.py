"""Video with a whole-frame search every S seconds and each face followed in between (issue 32): how much
faster, and how often the labels differ from searching every frame.

    python benchmarks/video_follow.py              # the shipped model (int8), S = 0 (every frame), 0.1 ... 1 s

Clips: the committed demo clip (videos/portraits.mp4: two portraits crossing, 640 x 480, 10 frames/s) and the
clip of benchmarks/commands.py (one portrait moving and zooming, 640 x 480, 300 frames at 30 frames/s). For each
S (`fer video --search-every S`), in this process (start-up left out; benchmarks/commands.py times whole commands): frames/s of
analyze_video with the annotated video and the CSV written, and against S = 0, joined by frame and face id: the
share of rows whose raw label (this frame's) and smoothed label (what is drawn) differ, the boxes' mean IoU,
and the rows found by one run and not the other. Time nothing while a training run has the machine
(DEVELOPERS.md). Writes benchmarks/results/video_follow.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from fer.democlip import Walk, render, write_clip  # noqa: E402
from fer.inference import load_engines  # noqa: E402
from fer.runtime import cpu_model  # noqa: E402
from fer.tracking import iou  # noqa: E402
from fer.video import VideoConfig, analyze_video  # noqa: E402


def one_face_clip(folder: Path) -> Path:
    walk = (Walk("grace_hopper.jpg", (0.3, 0.5), (0.7, 0.5), (150, 190)),)  # benchmarks/commands.py's clip
    return write_clip(folder / "one_face.mp4", render(walk, (640, 480), fps=30, seconds=10), fps=30)


def compare(reference, table) -> dict:
    joined = reference.merge(table, on=["frame", "face_id"], suffixes=("", "_k"))
    boxes = [iou(a, b) for a, b in zip(joined[["x", "y", "w", "h"]].to_numpy(), joined[["x_k", "y_k", "w_k", "h_k"]].to_numpy())]
    return {"rows": len(table), "rows_only_every_frame": len(reference) - len(joined),
            "rows_only_here": len(table) - len(joined),
            "raw_label_differs": round(float((joined["raw_label"] != joined["raw_label_k"]).mean()), 4),
            "label_differs": round(float((joined["label"] != joined["label_k"]).mean()), 4),
            "mean_box_iou": round(float(np.mean(boxes)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="default: the shipped model")
    parser.add_argument("--seconds", type=float, nargs="+", default=[0.1, 0.2, 0.33, 0.5, 1.0],
                        help="the S to try (0, every frame, is always run: the reference)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per S; the fastest is kept")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "video_follow"))
    args = parser.parse_args()
    models = load_engines(args.weights)
    results = {"machine": f"{cpu_model()}, {os.cpu_count()} cores", "engine": models[0].name, "clips": {}}
    with tempfile.TemporaryDirectory(prefix="fer-follow-") as scratch:
        scratch = Path(scratch)
        for clip in (REPO / "videos" / "portraits.mp4", one_face_clip(scratch)):
            rows, reference = [], None
            for every in sorted(set(args.seconds) | {0.0}):
                best = None
                for _ in range(args.repeats):
                    result = analyze_video(clip, models, scratch / "out.mp4", scratch / "out.csv",
                                           VideoConfig(search_every=every), progress=False)
                    best = result if best is None or result.seconds < best.seconds else best
                table = best.table
                reference = table if every == 0 else reference
                row = {"search_every": every, "frames": best.frames, "frames_per_second": round(best.frames / best.seconds, 1),
                       **compare(reference, table)}
                rows.append(row)
                print(clip.name, json.dumps(row), flush=True)
            results["clips"][clip.name] = rows
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| clip | search every (s) | frames/s | raw label differs | label differs | mean box IoU | rows lost / added |",
             "|---|---|---|---|---|---|---|"]
    for name, rows in results["clips"].items():
        lines += [f"| {name} | {r['search_every']:g} | {r['frames_per_second']} | {r['raw_label_differs']:.1%} | "
                  f"{r['label_differs']:.1%} | {r['mean_box_iou']:.3f} | {r['rows_only_every_frame']} / "
                  f"{r['rows_only_here']} |"
                  for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
