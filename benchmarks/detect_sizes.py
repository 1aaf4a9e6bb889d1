"""What the detector's input size costs and buys (issue 32): the smallest face YuNet still finds, and its time.

    python benchmarks/detect_sizes.py [--sides 320 480 640 960]

YuNet sees each photo scaled to `detect_side` pixels on its long side (fer.detect.DetectorConfig): fewer
pixels are faster, and make small faces smaller still. For each side: a 1600 x 1200 photo (a soft gradient)
holding one shipped portrait's head (fer.democlip.head) at a face width from 25 % down to 1 % of the photo's
long side; the smallest found (its box centre within half a face of the truth) for each portrait, and the
median time of `detect_faces` on the photo with a face of 10 % (upright search included, as predict runs it).
The photo-path benchmark (benchmarks/photo_path.py --detect-side) says what each side does to accuracy.
Time nothing while a training run has the machine (DEVELOPERS.md). Writes benchmarks/results/detect_sizes.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from fer.democlip import head  # noqa: E402
from fer.detect import DetectorConfig, detect_faces  # noqa: E402
from fer.runtime import cpu_model  # noqa: E402

PHOTO = (1600, 1200)
FRACTIONS = (0.25, 0.15, 0.10, 0.07, 0.05, 0.035, 0.025, 0.018, 0.0125, 0.01)  # face width / the long side
PORTRAITS = ("grace_hopper.jpg", "eileen_collins.jpg")


def photo_with(tile_bgr: np.ndarray, face_width: float) -> tuple[np.ndarray, np.ndarray]:
    """An RGB photo of PHOTO's size with the head (its face half the tile's side) at the centre; the centre."""
    width, height = PHOTO
    yy, xx = np.mgrid[0:height, 0:width]
    photo = np.stack([150 + 40 * xx / width, 160 + 30 * yy / height, np.full(xx.shape, 170.0)], -1).astype(np.uint8)
    side = max(4, round(2 * face_width))
    tile = cv2.cvtColor(cv2.resize(tile_bgr, (side, side), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    x0, y0 = (width - side) // 2, (height - side) // 2
    photo[y0:y0 + side, x0:x0 + side] = tile
    return photo, np.array([width / 2, height / 2])


def found(photo: np.ndarray, centre: np.ndarray, face_width: float, cfg: DetectorConfig) -> bool:
    return any(np.hypot(x + w / 2 - centre[0], y + h / 2 - centre[1]) < face_width / 2
               for x, y, w, h in (f.box for f in detect_faces(photo, cfg)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[320, 480, 640, 960])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "detect_sizes.json"))
    args = parser.parse_args()
    tiles = {name: head(name) for name in PORTRAITS}
    rows = []
    for side in args.sides:
        cfg = DetectorConfig(detect_side=side)
        smallest = {}
        for name, tile in tiles.items():
            hits = [f for f in FRACTIONS if found(*photo_with(tile, f * PHOTO[0]), f * PHOTO[0], cfg)]
            smallest[name] = min(hits) if hits else None
        photo, _ = photo_with(tiles[PORTRAITS[0]], 0.10 * PHOTO[0])
        detect_faces(photo, cfg)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            detect_faces(photo, cfg)
            times.append(time.perf_counter() - start)
        worst = max((v for v in smallest.values() if v is not None), default=None)
        row = {"detect_side": side, "smallest_face_found": smallest,
               "smallest_face_px_of_a_4000_px_photo": None if worst is None else round(worst * 4000),
               "detect_ms_median": round(1000 * statistics.median(times), 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"machine": f"{cpu_model()}, {os.cpu_count()} cores", "photo": list(PHOTO), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
