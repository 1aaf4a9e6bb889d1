"""Finish an ensemble member's run (issue 31) as the flagship was finished: average its last epochs, keep the
count of epochs PublicTest prefers, fit its temperature on PublicTest, write the shipped float16 file, and score
it once on the raw PrivateTest and on its own training faces (eval mode, un-augmented: the generalization gap).

    python benchmarks/finish_member.py runs/members/dropout.safetensors \
        --data ../shared/data/fer2013.zip --raw-test ../shared/data/fer2013-test-raw.zip \
        --out trained_models/resnet50_dropout.safetensors --results benchmarks/results/members/dropout.json

The run's snapshots are DIR/snapshots/NAME/epoch_*.safetensors (train --snapshots). Averages of the last 5, 10, 20
epochs and of the last 30 % of them (the flagship's 40 of 135) are each scored on PublicTest; the best is kept.
PrivateTest is read once, by the kept model, after every choice is made. Needs the machine to itself.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fer.average import average_run  # noqa: E402
from fer.calibrate import calibrate_engine, write_temperature  # noqa: E402
from fer.datasets import load_split  # noqa: E402
from fer.evaluate import evaluate  # noqa: E402
from fer.inference import load_engine  # noqa: E402
from fer.run_files import snapshot_path  # noqa: E402
from fer.weights import read_metadata  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the run's --out (its snapshots lie beside it)")
    parser.add_argument("--data", required=True, help="FER-2013 as trained on (train, PublicTest)")
    parser.add_argument("--raw-test", required=True, help="the test faces with their original pixels")
    parser.add_argument("--out", type=Path, required=True, help="the member's shipped weights (float16)")
    parser.add_argument("--results", type=Path, required=True, help="JSON of every figure")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    args = parser.parse_args()
    if args.out.exists() and not args.force:
        sys.exit(f"finish_member.py: {args.out} exists; --force replaces it")
    snapshots = sorted(snapshot_path(args.run, 1).parent.glob("epoch_*.safetensors"))
    if len(snapshots) < 2:
        sys.exit(f"finish_member.py: {len(snapshots)} snapshots beside {args.run}: train it with --snapshots")
    counts = sorted({min(c, len(snapshots)) for c in (5, 10, 20, round(0.3 * len(snapshots)))} - {0, 1})
    scratch = args.run.parent / "averaged"
    averaged = {}
    for k in counts:
        out = scratch / f"{args.run.stem}.last{k}.safetensors"
        averaged[k] = average_run(snapshots[-k:], out, args.data, force=True)
        print(f"mean of the last {k} epochs: PublicTest {averaged[k]['val_acc']:.4f}", flush=True)
    best_single = read_metadata(args.run)
    k = max(averaged, key=lambda c: averaged[c]["val_acc"])
    chosen = Path(averaged[k]["out"])
    engine = load_engine(chosen, "torch")
    temperature, split, n = calibrate_engine(engine, args.data)
    write_temperature(chosen, temperature, args.out)
    shipped = load_engine(args.out, "torch")
    private = evaluate(shipped, load_split(args.raw_test, "private", face=shipped.spec.face))
    train = evaluate(shipped, load_split(args.data, "train", face=shipped.spec.face))
    result = {"run": str(args.run), "epochs": len(snapshots), "train_seconds": best_single.get("train_seconds"),
              "best_single_epoch": {"epoch": best_single.get("epoch"), "public": best_single.get("val_acc")},
              "averaged_public": {str(c): round(a["val_acc"], 5) for c, a in averaged.items()},
              "kept": {"last_epochs": k, "public": round(averaged[k]["val_acc"], 5), "temperature": round(temperature, 4),
                       "fitted_on": split, "faces": n},
              "raw_private": {"accuracy": round(private["accuracy"], 5), "ece": round(private["ece"], 4)},
              "train_eval_mode": {"accuracy": round(train["accuracy"], 5)},
              "gap_train_minus_public": round(train["accuracy"] - averaged[k]["val_acc"], 5),
              "out": str(args.out)}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
