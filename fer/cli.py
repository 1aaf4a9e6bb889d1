"""`python -m fer {train,sweep,average,evaluate,calibrate,export,video,predict}` (or `fer ...` once installed).

Bad input: one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import warnings
from pathlib import Path

from .errors import FerError, one_line

EXIT_BAD_INPUT = 2


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text}")
    return value


class Parser(argparse.ArgumentParser):
    def parse_args(self, args=None, namespace=None):
        """argparse's, with "did you mean" for an unknown option close to one of the command's own."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            commands = next(a for a in self._actions if isinstance(a, argparse._SubParsersAction)).choices
            known = [o for a in commands[parsed.command]._actions for o in a.option_strings]
            words = []
            for extra in extras:
                close = difflib.get_close_matches(extra.split("=")[0], known, n=1, cutoff=0.6) \
                    if extra.startswith("--") else []
                words.append(f"{extra} (did you mean {close[0]}?)" if close else extra)
            self.error(f"unrecognized arguments: {' '.join(words)}")
        return parsed

    def error(self, message):  # one line, like every other bad input (argparse adds the usage)
        command = self.prog.removeprefix("python -m fer").strip()
        print(f"fer: {command + ': ' if command else ''}{one_line(message)} (see --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


# The commands and their one-line help. Each one's options are built (add_<command>_arguments) only for the
# command asked for: they import torch, torchvision and OpenCV, which `python -m fer --help` does not need.
COMMANDS = {
    "train": "train a model; the weights best on the selection split (PublicTest for FER-2013) go to --out",
    "sweep": "a grid of training runs from a spec (experiments/*.toml), compared in one table and chart; "
             "resumes where it stopped",
    "average": "one model from the mean of a run's last epochs (train --snapshots), BatchNorm recomputed, "
               "scored on the run's selection split",
    "evaluate": "accuracy, per-class recall and confusion matrix on face crops",
    "calibrate": "fit a temperature on the selection split (PublicTest for FER-2013) and store it in the weights",
    "export": "write the ONNX model of a weights file (float32, or int8 with --int8)",
    "video": "follow and label the faces of a video file or a camera over time",
    "predict": "find faces in photos and label their expressions",
}


def get_args_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the options of `command` only (None: of every command)."""
    parser = Parser(prog="python -m fer", description="FER-2013 facial-expression recognition "
                                     "with ResNet50: train, sweep, average, evaluate, calibrate, export, video, predict.")
    parser.add_argument("--version", action="version", version=f"fer {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    builders = {"train": add_train_arguments, "sweep": add_sweep_arguments, "average": add_average_arguments,
                "evaluate": add_evaluate_arguments,
                "calibrate": add_calibrate_arguments, "export": add_export_arguments, "video": add_video_arguments,
                "predict": add_predict_arguments}
    for name, help_text in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if command in (None, name):
            builders[name](command_parser)
    return parser


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as installed
    try:
        return installed("fer")
    except PackageNotFoundError:
        return "(not installed)"


def add_train_arguments(t: argparse.ArgumentParser) -> None:
    from .config import add_train_arguments as add_config_fields
    add_config_fields(t)
    t.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="change one setting of the recipe (or of the defaults), by its name: --set stem=no_maxpool "
                        "--set erase_prob=0.25 (repeatable; the value is read as TOML)")


def add_sweep_arguments(w: argparse.ArgumentParser) -> None:
    w.add_argument("spec", help="a TOML spec: name, seeds, [base], [grid], [[run]] (see fer/sweep.py)")
    w.add_argument("--data", default=None, help="every run's data set (default: the spec's, $FER_DATA, dataset_1/)")
    w.add_argument("--engine", choices=("auto", "notebook", "train"), default="auto",
                   help="notebook: notebook 02 through papermill; train: python -m fer train; "
                        "auto: notebook where papermill is installed (default)")
    w.add_argument("--jobs", type=positive_int, default=1, help="runs at once (default 1)")
    w.add_argument("--devices", default=None, metavar="LIST",
                   help="one device per job slot, comma-separated (e.g. cuda:0,cuda:1)")
    w.add_argument("--out", default=None, help="the sweep's folder (default: runs/sweeps/<name>)")
    w.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="replace a base setting of the spec (repeatable): --set time_budget=400 --set device=cpu")
    w.add_argument("--dry-run", action="store_true", help="list the runs and their state; run nothing")


def add_average_arguments(a: argparse.ArgumentParser) -> None:
    a.add_argument("snapshots", nargs="+", help="weights files of one run (DIR/snapshots/NAME/epoch_*.safetensors)")
    a.add_argument("--out", required=True, help="the averaged weights (.safetensors)")
    a.add_argument("--data", default=None, help="the run's data set (default: the one its config names)")
    a.add_argument("--force", action="store_true", help="replace an existing --out")


def add_evaluate_arguments(e: argparse.ArgumentParser) -> None:
    from .datasets import SPLITS
    e.add_argument("data", nargs="?", default=None,
                   help="folder, zip or CSV of face crops (default: $FER_DATA, then dataset_1/)")
    e.add_argument("--split", choices=SPLITS, default=None,
                   help="default: public for FER-2013 layouts, all for a plain <class>/ folder")
    add_weights_arguments(e)
    e.add_argument("--batch-size", type=positive_int, default=256,
                   help="faces per forward pass (default 256; smaller uses less memory)")
    e.add_argument("--json", action="store_true", help="print one JSON object")


def add_calibrate_arguments(c: argparse.ArgumentParser) -> None:
    from .datasets import SPLITS
    c.add_argument("data", help="the data set the model was chosen on")
    c.add_argument("--split", choices=SPLITS, default=None,
                   help="fit on this split (default: the one that chose the model, PublicTest for FER-2013)")
    c.add_argument("--weights", default=None, help="the weights file to calibrate (default: the shipped one)")
    c.add_argument("--out", default=None, help="write the calibrated weights here (a copy, with the temperature)")
    c.add_argument("--force", action="store_true", help="without --out: store the temperature in --weights itself")
    c.add_argument("--report", choices=SPLITS, default=None,
                   help="also report calibration error on this split (e.g. private), before and after")
    c.add_argument("--chart", default=None, help="write a reliability diagram of --report here (PNG)")


def add_export_arguments(x: argparse.ArgumentParser) -> None:
    x.add_argument("--weights", default=None, help="the weights file (default: the shipped one)")
    x.add_argument("--int8", action="store_true", help="statically quantized int8, calibrated on training crops")
    x.add_argument("--data", default=None, help="FER-2013 source of the calibration crops (--int8)")
    x.add_argument("--out", default=None, help="default: the cache (float32), NAME.int8.onnx beside the weights")


def add_video_arguments(v: argparse.ArgumentParser) -> None:
    from .video import VideoConfig
    v.add_argument("video", nargs="?", help="any video OpenCV reads (mp4, avi, mov, webm, ...)")
    v.add_argument("--camera", type=int, default=None, metavar="N", help="camera N instead of a file (q quits)")
    add_weights_arguments(v)
    add_detector_arguments(v)
    v.add_argument("--out", default=None, help=f"write the annotated video here ({', '.join(VIDEO_SUFFIXES)})")
    v.add_argument("--csv", default=None, help="write one row per frame and face here")
    v.add_argument("--every", type=positive_int, default=1, help="analyse every Nth frame (default 1: all)")
    v.add_argument("--search-every", type=float, default=VideoConfig.search_every, metavar="S",
                   help="search the whole frame every S seconds of video, and in between find each face again "
                        f"near where it was, a fraction of the work (default {VideoConfig.search_every:g}; 0: every "
                        "analysed frame)")
    v.add_argument("--max-rate", type=float, default=None, metavar="FPS",
                   help="analyse at most FPS frames per second of video, by time (the gallery uses 10)")
    v.add_argument("--smoothing", type=float, default=0.5,
                   help="seconds: time constant of the labels' average (default 0.5; 0: none)")
    v.add_argument("--json", action="store_true", help="print a summary as one JSON object")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    from .model import LAYERS
    from .preprocess import CLASSES
    p.add_argument("images", nargs="*", help="photos (jpg, png, webp, ...), or folders of photos")
    p.add_argument("--recursive", action="store_true", help="a folder's subfolders too")
    add_weights_arguments(p)
    add_detector_arguments(p)
    p.add_argument("--whole-image", action=argparse.BooleanOptionalAction, default=None,
                   help="when no face is found, label the whole image (--no-whole-image: never; default: only an "
                        "image of the model's own face size, such as FER-2013's 48 x 48 crops)")
    p.add_argument("--out", default=None, help="write annotated copies (NAME.fer.jpg) into this folder")
    p.add_argument("--explain", action="store_true",
                   help="also write each photo's Grad-CAM overlay (NAME.cam.jpg) into --out")
    p.add_argument("--explain-class", default=None, metavar="CLASS",
                   help=f"the class to explain, one of the model's ({', '.join(CLASSES)} for FER-2013's; default: "
                        f"each face's predicted class)")
    p.add_argument("--explain-layer", default=None, metavar="STAGE",
                   help=f"the network's stage (a ResNet's: {', '.join(LAYERS)}, layer1; default: the deepest "
                        f"with a grid of at least 6 x 6)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_detector_arguments(parser: argparse.ArgumentParser) -> None:
    from .detect import DetectorConfig
    d = DetectorConfig()
    parser.add_argument("--min-score", type=float, default=d.score_threshold,
                        help=f"YuNet's confidence a face needs (default {d.score_threshold})")
    parser.add_argument("--min-face", type=positive_int, default=d.min_face,
                        help=f"smallest face side in pixels (default {d.min_face})")
    parser.add_argument("--max-faces", type=positive_int, default=d.max_faces,
                        help=f"most faces per photo or frame (default {d.max_faces})")


def detector_config(args):
    from .detect import DetectorConfig
    from .errors import FerError
    if not 0 < args.min_score < 1:
        raise FerError(f"--min-score must be between 0 and 1, not {args.min_score}")
    return DetectorConfig(score_threshold=args.min_score, min_face=args.min_face, max_faces=args.max_faces)


WEIGHTS_SUFFIXES = (".safetensors", ".txt")  # a weights file, or an ensemble list (fer.ensemble)
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv")  # containers OpenCV's mp4v writer fills


def add_weights_arguments(parser: argparse.ArgumentParser) -> None:
    from .inference import ENGINES
    parser.add_argument("--weights", nargs="+", action="extend", default=None, metavar="FILE",
                        help="weights file(s) or an ensemble list (NAME.txt, one file a line); several are "
                             "ensembled, each with its own temperature; repeatable (default: the shipped model)")
    shipped = parser.add_mutually_exclusive_group()
    shipped.add_argument("--ensemble", action="store_true",
                         help="the shipped ensemble: the members trained_models/ensemble.txt names")
    shipped.add_argument("--fast", action="store_true",
                         help="the shipped small model, trained_models/resnet18_w16.safetensors: several times "
                              "faster, a few points less accurate (README, 'The small model')")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="what runs the network (auto: int8 ONNX Runtime where its file exists, else torch)")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation (shifts and mirror images)")


def take_back_inputs(args) -> None:
    """`predict --weights W photo.jpg`: the photo was taken as a second weights file. Values of --weights that
    are not weights files by name (.safetensors, .txt) after the last one that is are the command's inputs
    (predict's photos, video's clip, evaluate's data)."""
    if not args.weights:
        return
    keep = len(args.weights)
    while keep and not args.weights[keep - 1].endswith(WEIGHTS_SUFFIXES):
        keep -= 1
    if keep == len(args.weights) or keep == 0:
        return
    moved, args.weights = args.weights[keep:], args.weights[:keep]
    if args.command == "predict":
        args.images = moved + args.images
    elif args.command == "video" and args.video is None and len(moved) == 1:
        args.video = moved[0]
    elif args.command == "evaluate" and args.data is None and len(moved) == 1:
        args.data = moved[0]
    else:
        args.weights += moved  # not inputs after all: the weights loader names what is wrong


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not valid UTF-8 must still print
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg quiet, read when OpenCV is first imported
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        if not argv:  # `python -m fer` alone: what it can do, not an error
            get_args_parser().print_help()
            return 0
        command = argv[0] if argv and argv[0] in COMMANDS else ""  # "": no command's options (--help, a typo)
        args = get_args_parser(command).parse_args(argv)
    except SystemExit as e:  # --help (0), or a usage error already printed in one line (2)
        return e.code
    if args.command in ("predict", "video", "evaluate"):
        take_back_inputs(args)
    # The promise is one line on stderr: libraries' warnings about inputs that are handled anyway (Pillow's
    # "Corrupt EXIF data", numpy on a float TIFF's infinities, torch on a legacy checkpoint) are not shown.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            commands = {"train": run_train, "sweep": run_sweep, "average": run_average, "evaluate": run_evaluate,
                        "calibrate": run_calibrate, "predict": run_predict, "export": run_export, "video": run_video}
            return commands[args.command](args)
        except (FerError, OSError) as e:
            print(f"fer: {one_line(e)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print("fer: interrupted", file=sys.stderr)
            return 130


def run_train(args) -> int:
    from .config import config_from_args
    from .train import train
    cfg, explicit = config_from_args(args)
    train(cfg, explicit)
    return 0


def run_sweep(args) -> int:
    """Exit 0 when every run is done, 1 when some failed (their errors are in the results table)."""
    from . import sweep
    from .errors import ConfigError
    from .recipes import parse_overrides
    from .runtime import pick_device
    devices = args.devices.split(",") if args.devices else None
    for device in devices or []:
        try:
            pick_device(device.strip())
        except (ConfigError, RuntimeError, ValueError) as e:
            raise ConfigError(f"--devices: {one_line(e)}") from None
    runs = sweep.plan(sweep.read_spec(args.spec), args.data, args.out, parse_overrides(args.set))
    if args.dry_run:
        for run in runs:
            print(f"{run.status()['status']:>10}  {run.folder}")
        return 0
    sweep.run_sweep(runs, args.engine, args.jobs, [d.strip() for d in devices] if devices else None)
    table, means, chart = sweep.report(runs, runs[0].folder.parent)
    print(sweep.markdown(means) + f"runs: {len(table)}, done: {(table['status'] == 'done').sum()}; results.csv, "
          f"summary.csv and {chart.name} in {runs[0].folder.parent}")
    return 0 if (table["status"] == "done").all() else 1


def run_average(args) -> int:
    from .average import average_run
    from .datasets import split_name
    from .errors import DataError
    if not args.out.endswith(".safetensors"):
        raise DataError(f"--out {args.out} must end in .safetensors")
    result = average_run(args.snapshots, args.out, args.data, args.force)
    epochs = result["epochs"]
    which = f" (epochs {min(epochs)}-{max(epochs)})" if all(isinstance(e, int) for e in epochs) else ""
    print(f"averaged {len(epochs)} snapshots{which}: {split_name(result['val_split'])} {result['val_acc']:.2%} "
          f"-> {result['out']}")
    return 0


def weights_of(args) -> list:
    """The weights files --weights, --ensemble and --fast name, ensemble lists expanded; [None]: the shipped
    model."""
    from .ensemble import expand_weights
    from .errors import WeightsError
    from .paths import ENSEMBLE_MANIFEST, FAST_WEIGHTS
    if args.ensemble and not ENSEMBLE_MANIFEST.is_file():
        raise WeightsError(f"--ensemble: there is no {ENSEMBLE_MANIFEST.name} in {ENSEMBLE_MANIFEST.parent}")
    if args.fast and args.weights:  # an ensemble with the small model in it would not be fast
        raise WeightsError("--fast is the shipped small model: give it or --weights, not both")
    if args.fast and not FAST_WEIGHTS.is_file():
        raise WeightsError(f"--fast: there is no {FAST_WEIGHTS.name} in {FAST_WEIGHTS.parent}")
    return expand_weights((args.weights or []) + ([ENSEMBLE_MANIFEST] if args.ensemble else [])
                          + ([FAST_WEIGHTS] if args.fast else [])) or [None]


def load_engines(args) -> list:
    from .inference import load_engines as engines_for
    return engines_for(weights_of(args), args.engine)


def run_export(args) -> int:
    from .export import export_int8, export_onnx
    path = export_int8(args.weights, args.data, args.out) if args.int8 else export_onnx(args.weights, args.out)
    print(path)
    return 0


def run_evaluate(args) -> int:
    from .datasets import load_split
    from .evaluate import evaluate
    from .inference import classes_of, face_of
    models = load_engines(args)
    classes = classes_of(models)
    faces = load_split(args.data, args.split, face=face_of(models))
    result = evaluate(models, faces, tta=args.tta, batch_size=args.batch_size)
    result.update(split=faces.split, data=faces.source, tta=args.tta,
                  weights=([str(p) for p in weights_of(args)] if args.weights or args.ensemble or args.fast
                           else ["default"]),
                  engine=[m.name for m in models])
    if args.json:
        print(json.dumps(result, allow_nan=False))
        return 0
    print(f"{faces.source} [{faces.split}]: {result['n']} images, accuracy {result['accuracy']:.4f}"
          f"{' (TTA)' if args.tta else ''}, calibration error (ECE) {result['ece']:.3f}, "
          f"{result['images_per_second']:.0f} images/s")
    for name, recall in result["per_class"].items():
        print(f"  {name:>9}: recall {'-' if recall is None else f'{recall:.3f}'}")
    print("confusion (rows: true, columns: predicted; " + " ".join(c[:3] for c in classes) + ")")
    for name, row in zip(classes, result["confusion"]):
        print(f"  {name[:3]} " + " ".join(f"{v:4d}" for v in row))
    return 0


def run_calibrate(args) -> int:
    from .calibrate import calibrate_weights
    from .errors import DataError
    from .paths import DEFAULT_WEIGHTS
    from .runtime import check_outputs
    path = Path(args.weights) if args.weights else DEFAULT_WEIGHTS
    if args.out is None and not args.force:  # the shipped weights are tracked files: never rewritten by default
        raise DataError(f"calibrate writes the temperature into a weights file: give --out for a calibrated copy, "
                        f"or --force to store it in {path} itself")
    if args.out is not None and not str(args.out).endswith(".safetensors"):
        raise DataError(f"--out {args.out} must end in .safetensors")
    if args.out is not None and Path(args.out).exists() and not args.force:
        raise DataError(f"--out {args.out} exists; --force replaces it")
    if args.chart is not None:  # before the fit: a chart that cannot be written must not cost the temperature
        from .charts import check_chart_path
        check_chart_path(args.chart)
    check_outputs({"--chart": args.chart, "--out": args.out}, [path, args.data])
    print(json.dumps(calibrate_weights(path, args.data, args.split, args.out, args.report, args.chart)))
    return 0


def run_predict(args) -> int:
    from .errors import DataError
    from .photos import iter_predictions, photos_in, summary_line
    if not args.images:
        raise DataError("give photos or folders of photos to label")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise DataError(f"--out {args.out} is a file; give a folder for the annotated copies")
    photos = photos_in(args.images, args.recursive)
    explainer = None
    if args.explain or args.explain_class or args.explain_layer:
        from .errors import FerError
        from .explain import Explainer
        from .inference import load_engine
        if args.out is None:
            raise FerError("--explain writes its heat maps beside the annotated copies: give --out")
        explainer = Explainer([load_engine(p, "torch") for p in weights_of(args)], args.explain_class,
                              args.explain_layer)
    models = load_engines(args)
    results, failed = [], 0
    for result in iter_predictions(photos, models, tta=args.tta, out_dir=args.out, detector=detector_config(args),
                                   explainer=explainer, whole_image=args.whole_image):
        results.append(result)
        if "error" in result:
            failed += 1
            print(f"fer: {one_line(result['error'])}", file=sys.stderr, flush=True)
        if "faces" in result and not args.json:
            print(summary_line(result), flush=True)
    if args.json:
        print(json.dumps({"results": results}, allow_nan=False))
    return EXIT_BAD_INPUT if failed else 0


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def run_video(args) -> int:
    from .errors import DataError
    from .video import VideoConfig, analyze_video, camera_can_show, emotion_shares
    if (args.video is None) == (args.camera is None):
        raise DataError("give a video file or --camera N (one of them)")
    show = args.camera is not None and camera_can_show()
    if args.camera is not None and not show and args.out is None and args.csv is None:
        raise DataError("cannot show the camera: this OpenCV has no windows (opencv-python-headless) or there is "
                        "no display; record the stream with --out or --csv")
    if args.max_rate is not None and not 0 < args.max_rate <= 1000:
        raise DataError(f"--max-rate must be between 0 and 1000 frames per second, not {args.max_rate}")
    if not 0 <= args.search_every <= 60:
        raise DataError(f"--search-every must be between 0 and 60 seconds, not {args.search_every}")
    if not 0 <= args.smoothing <= 60:
        raise DataError(f"--smoothing must be between 0 and 60 seconds, not {args.smoothing}")
    if args.out is not None and not args.out.lower().endswith(VIDEO_SUFFIXES):
        raise DataError(f"--out {args.out} must end in {', '.join(VIDEO_SUFFIXES)} (the container it is written in)")
    models = load_engines(args)
    result = analyze_video(args.camera if args.video is None else args.video, models, args.out, args.csv,
                           VideoConfig(every=args.every, smoothing=args.smoothing, max_rate=args.max_rate,
                                       search_every=args.search_every, detector=detector_config(args), tta=args.tta),
                           progress=not args.no_progress,
                           show=show)
    table = result.table
    faces = {int(i): {"frames": int((table["face_id"] == i).sum()), "shares": shares.to_dict()}
             for i, shares in emotion_shares(table).iterrows()} if len(table) else {}
    summary = {"video": args.video if args.video is not None else f"camera {args.camera}", "frames": result.frames,
               "analysed_frames": result.analysed, "fps": round(result.fps, 3), "seconds": round(result.seconds, 2),
               "frames_per_second": round(result.frames / max(result.seconds, 1e-9), 1),
               "complete": result.complete, "outputs": result.outputs, "faces": faces}
    if not result.complete:
        print(f"fer: the video ended after {result.frames} frames, before its announced length; "
              f"what was read is written", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{summary['video']}: {plural(result.frames, 'frame')} ({result.analysed} analysed) in "
          f"{result.seconds:.1f} s, {summary['frames_per_second']} frames/s, {plural(len(faces), 'face')}")
    for face_id, face in faces.items():
        top = sorted(face["shares"].items(), key=lambda kv: -kv[1])[:3]
        print(f"  face {face_id}: seen in {plural(face['frames'], 'analysed frame')}, labelled "
              + ", ".join(f"{k} in {v:.0%}" for k, v in top if v) + " of them")
    for kind, path in result.outputs.items():
        print(f"  {kind} -> {path}")
    if not result.outputs:
        print("  nothing written: --out keeps the annotated video, --csv the table of every frame and face")
    return 0
