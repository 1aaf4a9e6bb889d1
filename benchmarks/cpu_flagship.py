"""The CPU flagship's table and chart (issue 20): each run's recipe, epochs, throughput and best PublicTest,
and PublicTest accuracy against hours of training for all of them on one chart.

    python benchmarks/cpu_flagship.py a=runs/pilots/a.safetensors b=runs/pilots/b.safetensors \
        c=runs/pilots/c.safetensors flagship=runs/flagship/resnet50.safetensors

Reads each run's weights metadata (its training config) and its history CSV (beside the weights); copies the
histories into benchmarks/results/cpu_flagship/, writes the Markdown table there (table.md) and the chart to
charts/accuracy_vs_cpu_hours.png. Prints the table.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from fer.charts import plot_accuracy_vs_hours, read_history, save
from fer.paths import DEFAULT_WEIGHTS
from fer.weights import read_metadata

RESULTS = Path(__file__).parent / "results" / "cpu_flagship"


def recipe(config: dict) -> str:
    """The settings that differ between the runs, in a few words."""
    parts = [config["arch"], f"stem {config['stem']}"]
    if config.get("dropout"):
        parts.append(f"dropout {config['dropout']} after every activation")
    if config["head_dropout"]:
        parts.append(f"head dropout {config['head_dropout']}")
    parts.append(f"erasing p {config['augment']['erase_prob']}")
    parts.append(f"{config['optimizer']} lr {config['lr']:g}")
    return ", ".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=WEIGHTS")
    parser.add_argument("--chart", default="accuracy_vs_cpu_hours.png")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows, histories = [], {}
    for spec in args.runs:
        name, path = spec.split("=", 1)
        weights = Path(path)
        history_path = weights.with_suffix(".history.csv")
        config = read_metadata(weights)["train_config"]
        history = read_history(history_path)
        shutil.copyfile(history_path, RESULTS / f"{name}.history.csv")
        histories[name] = history
        best = history["val_acc"].idxmax()
        rows.append(f"| {name} | {recipe(config)} | {config['time_budget'] / 3600:.2f} h | {len(history)} | "
                    f"{history['images_per_second'].median():.0f} | **{history['val_acc'][best]:.2%}** "
                    f"(epoch {history['epoch'][best]}, {history['seconds'][best] / 3600:.2f} h) |")
    table = "\n".join(["| run | recipe | budget | epochs | train img/s | best PublicTest (epoch, hours) |",
                       "|---|---|---|---|---|---|", *rows]) + "\n"
    (RESULTS / "table.md").write_text(table)
    shipped = read_metadata(DEFAULT_WEIGHTS)  # the line to pass: the shipped model's PublicTest accuracy
    averaged = shipped.get("averaged_epochs")  # weights averaged by `python -m fer average`
    what = f", the mean of epochs {averaged[0]}-{averaged[-1]}" if averaged else ""
    reference = {f"shipped {DEFAULT_WEIGHTS.stem}{what} (PublicTest)": shipped["val_acc"]}
    chart = save(plot_accuracy_vs_hours(histories, title="What a 2-core CPU buys on FER-2013", reference=reference),
                 args.chart)
    print(table + f"\nhistories and table in {RESULTS}; chart {chart}")


if __name__ == "__main__":
    main()
