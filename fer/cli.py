"""`python -m fer {train,evaluate,predict}`. Bad input: one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .data import CLASSES, SPLITS, DataError
from .weights import WeightsError

EXIT_BAD_INPUT = 2


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fer", description="FER-2013 facial-expression recognition "
                                     "with ResNet50: train, evaluate, predict.")
    sub = parser.add_subparsers(dest="command", required=True)

    from .model import ARCHS, NORMS, STEMS
    from .train import TrainConfig
    d = TrainConfig()
    t = sub.add_parser("train", help="train a model; best-on-PublicTest weights go to --out",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--data", default=None, help="folder, zip or CSV (default: $FER_DATA, then dataset_1/)")
    t.add_argument("--model", choices=ARCHS, default=d.model)
    t.add_argument("--dropout", type=float, default=None, help="p after every activation (resnet50_dropout)")
    t.add_argument("--head-dropout", type=float, default=d.head_dropout)
    t.add_argument("--stem", choices=STEMS, default=d.stem)
    t.add_argument("--norm", choices=NORMS, default=d.norm, help="group: GroupNorm instead of BatchNorm")
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--optimizer", choices=("adamw", "sgd"), default=d.optimizer)
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    t.add_argument("--ema-decay", type=float, default=d.ema_decay, help="> 0: keep and ship an EMA of the weights")
    t.add_argument("--subset", type=int, default=None, help="train on N images only (smoke runs)")
    t.add_argument("--val-subset", type=int, default=None, help="evaluate on N PublicTest images only")
    t.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ...")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--time-budget", type=float, default=None, help="seconds; the schedule fits inside it")
    t.add_argument("--out", default=d.out)
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint of --out")
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--no-amp", action="store_true", help="float32 throughout (no bf16 autocast)")
    t.add_argument("--no-progress", action="store_true", help="no tqdm bars (log files)")

    e = sub.add_parser("evaluate", help="accuracy, per-class recall and confusion matrix on face crops")
    e.add_argument("data", help="folder, zip or CSV of face crops")
    e.add_argument("--split", choices=SPLITS, default=None,
                   help="default: public for FER-2013 layouts, all for a plain <class>/ folder")
    e.add_argument("--weights", nargs="+", default=None, help="weights file(s); several are ensembled")
    e.add_argument("--tta", action="store_true", help="test-time augmentation (shifts and flips)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--json", action="store_true", help="print one JSON object")

    c = sub.add_parser("calibrate", help="fit a temperature on PublicTest and store it in the weights")
    c.add_argument("data", help="a FER-2013 source with a PublicTest split")
    c.add_argument("--weights", default=None, help="the weights file to calibrate (default: the shipped one)")
    c.add_argument("--report", choices=SPLITS, default=None,
                   help="also report calibration error on this split (e.g. private), before and after")
    c.add_argument("--chart", default=None, help="write a reliability diagram of --report here (PNG)")

    p = sub.add_parser("predict", help="find faces in photos and label their expressions")
    p.add_argument("images", nargs="+", help="photos (jpg, png, ...)")
    p.add_argument("--weights", nargs="+", default=None, help="weights file(s); several are ensembled")
    p.add_argument("--out", default=None, help="write annotated copies into this folder")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        commands = {"train": run_train, "evaluate": run_evaluate, "calibrate": run_calibrate, "predict": run_predict}
        return commands[args.command](args)
    except (DataError, WeightsError, ValueError, OSError) as e:
        print(f"fer: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("fer: interrupted", file=sys.stderr)
        return 130


def run_train(args) -> int:
    from .train import TrainConfig, train
    cfg = TrainConfig(data=args.data, model=args.model, dropout=args.dropout, head_dropout=args.head_dropout,
                      stem=args.stem, norm=args.norm, amp=not args.no_amp, epochs=args.epochs,
                      batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                      weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                      ema_decay=args.ema_decay,
                      subset=args.subset, val_subset=args.val_subset, device=args.device, seed=args.seed,
                      time_budget=args.time_budget, out=args.out, resume=args.resume, compile=args.compile,
                      progress=not args.no_progress)
    cfg.model_config()  # a bad model/dropout combination fails here, before any data is read
    train(cfg)
    return 0


def _load_models(paths):
    from .weights import load_model
    return [load_model(p) for p in (paths or [None])]


def run_evaluate(args) -> int:
    from .data import load_split
    from .evaluate import evaluate
    faces = load_split(args.data, args.split)
    models = _load_models(args.weights)
    result = evaluate(models, faces, tta=args.tta, batch_size=args.batch_size)
    result.update(split=faces.split, data=faces.source, tta=args.tta,
                  weights=args.weights or ["default"])
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{faces.source} [{faces.split}]: {result['n']} images, accuracy {result['accuracy']:.4f}"
          f"{' (TTA)' if args.tta else ''}, {result['images_per_second']:.0f} images/s")
    for name, recall in result["per_class"].items():
        print(f"  {name:>9}: recall {'-' if recall is None else f'{recall:.3f}'}")
    print("confusion (rows: true, columns: predicted; " + " ".join(c[:3] for c in CLASSES) + ")")
    for name, row in zip(CLASSES, result["confusion"]):
        print(f"  {name[:3]} " + " ".join(f"{v:4d}" for v in row))
    return 0


def run_calibrate(args) -> int:
    from .calibrate import expected_calibration_error, fit_temperature, log_probs_of, write_temperature
    from .data import load_split
    from .weights import DEFAULT_WEIGHTS, load_model
    path = Path(args.weights) if args.weights else DEFAULT_WEIGHTS
    model = load_model(path)
    public = load_split(args.data, "public")
    log_probs = log_probs_of(model, public.images)
    temperature = fit_temperature(log_probs, public.labels)
    result = {"weights": str(path), "temperature": round(temperature, 4), "fitted_on": "public"}
    if args.report:
        faces = load_split(args.data, args.report)
        before = log_probs_of(model, faces.images)
        probs_before, probs_after = before.softmax(1), (before / temperature).softmax(1)
        result.update({f"{args.report}_ece_before": round(expected_calibration_error(probs_before, faces.labels), 4),
                       f"{args.report}_ece_after": round(expected_calibration_error(probs_after, faces.labels), 4)})
        if args.chart:
            from .calibrate import reliability_bins
            from .charts import plot_reliability, save
            save(plot_reliability({"before": reliability_bins(probs_before, faces.labels),
                                   f"after (T = {temperature:.2f})": reliability_bins(probs_after, faces.labels)},
                                  title=f"{args.report}: reliability"), args.chart)
    write_temperature(path, temperature)
    print(json.dumps(result))
    return 0


def run_predict(args) -> int:
    from .predict import NO_FACE_NOTE, annotate, predict_files
    models = _load_models(args.weights)
    results = predict_files(args.images, models, tta=args.tta)
    failed = [r for r in results if "error" in r]
    if args.out:
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        for r in results:
            if "error" not in r:
                r["annotated"] = str(annotate(r, out_dir))
    if args.json:
        print(json.dumps({"results": results}))
    else:
        for r in results:
            if "error" in r:
                continue
            faces = ", ".join(f"{f['label']} {f['probs'][f['label']]:.0%}" for f in r["faces"])
            where = "" if r["face_found"] else f" ({NO_FACE_NOTE})"
            print(f"{r['path']}: {faces}{where}" + (f" -> {r['annotated']}" if "annotated" in r else ""))
    for r in failed:
        print(f"fer: {r['error']}", file=sys.stderr)
    return EXIT_BAD_INPUT if failed else 0
