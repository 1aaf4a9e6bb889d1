"""What a user of the command line waits for (issue 32): whole commands, start-up included, as wall time and
peak memory (the process's maximum resident set, from os.wait4).

    python benchmarks/commands.py                               # this checkout, the shipped model
    python benchmarks/commands.py --tree ../other-checkout      # another version of fer, for a before/after
    python benchmarks/commands.py --peer ../peer-tf/bin/python  # and the `fer` package's own command beside it

  photo   python -m fer predict PHOTO (a 425 x 521 portrait with one face, the default)
  video   python -m fer video CLIP --out OUT.mp4 --csv OUT.csv on a 640 x 480 clip of 300 frames with one face
          (fer.democlip: a shipped portrait moving and zooming across the frame); frames/s of the whole command
  peer    PYTHON -m fer.fer --image PHOTO, the `fer` package's command line (its defaults: OpenCV's Haar cascade,
          the quantized tflite model, TensorFlow imported), in a virtual environment of its own with TensorFlow:
          python3 -m venv ../peer-tf && ../peer-tf/bin/pip install --no-deps fer==25.10.3 &&
          ../peer-tf/bin/pip install tensorflow-cpu opencv-python-headless requests pillow pandas tqdm

Each run is a fresh process, after one unmeasured run that warms the operating system's file cache (as on
every call after a user's first); the median of --repeats runs is reported, with the slowest. Time nothing
while a training run has the machine (DEVELOPERS.md). Writes benchmarks/results/commands.json unless --out
says otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from fer.democlip import Walk, render, write_clip  # noqa: E402
from fer.runtime import cpu_model  # noqa: E402

VIDEO_FRAMES, VIDEO_FPS = 300, 30


def run_once(argv: list[str], cwd: Path, env: dict) -> tuple[float, float, str]:
    """(seconds, peak resident MB, stdout) of one command in a fresh process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)  # reaped here, with its own resource usage
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(argv[1:3])} failed ({process.returncode}): {err.read().strip()[-300:]}")
        return seconds, usage.ru_maxrss / 1024, out.read().strip()  # ru_maxrss: kilobytes on Linux


def measure(tree: Path, arguments: list[str], repeats: int, python: str = sys.executable) -> dict:
    """`python -m fer ARGUMENTS` of the checkout `tree`; with python given, `python -m ARGUMENTS` run outside
    the checkout (a peer package also named fer must not find ours on its path)."""
    if python == sys.executable:
        argv, cwd, env = [python, "-m", "fer", *arguments], tree, {**os.environ, "PYTHONPATH": str(tree)}
    else:
        argv, cwd, env = [python, "-m", *arguments], Path(tempfile.gettempdir()), {
            k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run_once(argv, cwd, env)
    runs = [run_once(argv, cwd, env) for _ in range(repeats)]
    seconds = [s for s, _, _ in runs]
    return {"command": "python -m " + " ".join(Path(a).name if os.sep in a else a for a in argv[2:]),
            "median_seconds": round(statistics.median(seconds), 3), "slowest_seconds": round(max(seconds), 3),
            "peak_resident_mb": round(max(m for _, m, _ in runs)),
            "printed": (runs[-1][2].splitlines() or [""])[-1][-200:].replace(str(tree) + os.sep, "")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default=str(REPO / "photos_to_predict" / "eileen_collins.jpg"))
    parser.add_argument("--tree", default=str(REPO), help="the checkout whose fer runs (default: this one)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-video", action="store_true")
    parser.add_argument("--search-every", default=None, metavar="S",
                        help="pass --search-every S to the video command (default: the command's own default)")
    parser.add_argument("--peer", metavar="PYTHON", default=None,
                        help="also time the `fer` package's own command (python -m fer.fer --image PHOTO)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "commands.json"))
    args = parser.parse_args()
    tree = Path(args.tree).resolve()
    result = {"machine": f"{cpu_model()}, {os.cpu_count()} cores", "tree": tree.name, "repeats": args.repeats,
              "photo": measure(tree, ["predict", str(Path(args.photo).resolve())], args.repeats)}
    print(json.dumps(result["photo"]), flush=True)
    if args.peer:
        result["peer_photo"] = measure(tree, ["fer.fer", "--image", str(Path(args.photo).resolve())], args.repeats,
                                       python=args.peer)
        print(json.dumps(result["peer_photo"]), flush=True)
    if not args.skip_video:
        with tempfile.TemporaryDirectory(prefix="fer-commands-") as scratch:
            walk = (Walk("grace_hopper.jpg", (0.3, 0.5), (0.7, 0.5), (150, 190)),)
            clip = write_clip(Path(scratch) / "one_face.mp4",
                              render(walk, (640, 480), fps=VIDEO_FPS, seconds=VIDEO_FRAMES / VIDEO_FPS), fps=VIDEO_FPS)
            follow = ["--search-every", args.search_every] if args.search_every is not None else []
            video = measure(tree, ["video", str(clip), "--out", str(Path(scratch) / "out.mp4"), "--csv",
                                   str(Path(scratch) / "out.csv"), *follow], args.repeats)
        video["frames"] = VIDEO_FRAMES
        video["frames_per_second"] = round(VIDEO_FRAMES / video["median_seconds"], 1)
        result["video"] = video
        print(json.dumps(video), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
