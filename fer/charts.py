"""Charts: training curves from history CSVs, confusion matrices, class counts, face grids, reliability."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd

from .errors import DataError, quote
from .paths import charts_dir
from .runtime import atomic_write

# History CSVs written while the selection split was always PublicTest, and named so.
OLD_HISTORY_COLUMNS = {"public_loss": "val_loss", "public_acc": "val_acc"}


def read_history(path) -> pd.DataFrame:
    return pd.read_csv(path).rename(columns=OLD_HISTORY_COLUMNS)


def plot_history(histories: dict[str, str | Path | pd.DataFrame], title: str = "",
                 val_name: str = "PublicTest") -> plt.Figure:
    """Loss and accuracy per epoch, train (dashed) vs the selection split (solid; `val_name`), one colour per run;
    the best selection accuracy of each run is marked and named in the legend. Markers show every epoch, so a
    one-epoch run is a visible point, not an empty chart."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    epochs = 1
    for i, (name, history) in enumerate(histories.items()):
        df = history if isinstance(history, pd.DataFrame) else read_history(history)
        df = df.rename(columns=OLD_HISTORY_COLUMNS)
        color, marker = f"C{i}", "o" if len(df) <= 30 else None
        epochs = max(epochs, int(df["epoch"].max()))
        best = df["val_acc"].idxmax()
        ax_loss.plot(df["epoch"], df["train_loss"], "--", color=color, marker=marker, ms=3, label=f"{name} train")
        ax_loss.plot(df["epoch"], df["val_loss"], "-", color=color, marker=marker, ms=3,
                     label=f"{name} {val_name}")
        ax_acc.plot(df["epoch"], df["train_acc"], "--", color=color, marker=marker, ms=3, label=f"{name} train")
        ax_acc.plot(df["epoch"], df["val_acc"], "-", color=color, marker=marker, ms=3,
                    label=f"{name} {val_name} (best {df['val_acc'][best]:.1%}, epoch {df['epoch'][best]})")
        ax_acc.plot(df["epoch"][best], df["val_acc"][best], "*", color=color, ms=12)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.set_xlim(0.5, epochs + 0.5)
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    # Below the axes, so that no line or label of the chart is covered.
    ax_acc.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_hours(histories: dict[str, str | Path | pd.DataFrame], title: str = "",
                           reference: dict[str, float] | None = None, val_name: str = "PublicTest") -> plt.Figure:
    """Selection-split (`val_name`) accuracy against the hours of training (evaluation included) that bought it, one line per
    run: what a machine buys on FER-2013. `reference`: horizontal lines, e.g. another model's accuracy."""
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for i, (name, history) in enumerate(histories.items()):
        df = history if isinstance(history, pd.DataFrame) else read_history(history)
        best = df["val_acc"].idxmax()
        ax.plot(df["seconds"] / 3600, df["val_acc"], "-", color=f"C{i}", marker="o" if len(df) <= 40 else None,
                ms=3, label=f"{name} (best {df['val_acc'][best]:.1%} after {df['seconds'][best] / 3600:.2f} h)")
        ax.plot(df["seconds"][best] / 3600, df["val_acc"][best], "*", color=f"C{i}", ms=12)
    for j, (name, value) in enumerate((reference or {}).items()):
        ax.axhline(value, color="0.4", ls=(0, (4, 2 + 2 * j)), lw=1, label=f"{name} ({value:.1%})")
    ax.set(xlabel="hours of training, evaluation included", ylabel=f"{val_name} accuracy", title=title or None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    fig.tight_layout()
    return fig


def plot_sweep(histories: dict[str, pd.DataFrame], groups: dict[str, str], table: pd.DataFrame,
               title: str = "", val_name: str = "PublicTest") -> plt.Figure:
    """A sweep at a glance. Left: selection-split (`val_name`) accuracy per epoch of every run, one colour per setting, one line
    style per seed. Right: each setting's best accuracy there, a dot per seed and a bar at their mean, so
    a difference smaller than the seeds' spread shows as one. `groups`: run name -> its setting's label;
    `table`: fer.sweep.results (run, seed, status, best_val_acc)."""
    labels = list(dict.fromkeys(groups.values()))
    seeds = sorted(table["seed"].unique())
    styles = ["-", "--", ":", "-."]
    fig, (ax_curves, ax_best) = plt.subplots(1, 2, figsize=(12, 0.9 + max(3.6, 0.35 * len(labels))),
                                             gridspec_kw={"width_ratios": [1.3, 1]})
    for name, df in histories.items():
        color = f"C{labels.index(groups[name]) % 10}"
        seed = table.loc[table["run"] == name, "seed"].iloc[0]
        ax_curves.plot(df["epoch"], df["val_acc"], styles[seeds.index(seed) % 4], color=color,
                       marker="o" if len(df) <= 30 else None, ms=3)
    ax_curves.set(xlabel="epoch", ylabel=f"{val_name} accuracy", title="every run (colour: setting, line: seed)")
    ax_curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_curves.grid(alpha=0.3)
    for i, label in enumerate(labels):
        runs = [n for n, g in groups.items() if g == label]
        rows = table[table["run"].isin(runs)]
        done = rows[rows["status"] == "done"]["best_val_acc"]
        y = len(labels) - 1 - i
        ax_best.plot(done, [y] * len(done), "o", color=f"C{i % 10}", ms=6, alpha=0.8)
        if len(done):
            ax_best.plot([done.mean()] * 2, [y - 0.3, y + 0.3], "-", color=f"C{i % 10}", lw=2.5)
        failed = (rows["status"] == "failed").sum()
        text = f"{done.mean():.1%} ± {done.std():.1%}" if len(done) > 1 else \
            f"{done.mean():.1%}" if len(done) else "no finished run"
        ax_best.annotate(text + (f" ({failed} failed)" if failed else ""), (1.0, y), xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points",
                         va="center", fontsize=8)
    ax_best.set_yticks(range(len(labels)), labels[::-1], fontsize=8)
    ax_best.set_ylim(-0.7, len(labels) - 0.3)
    ax_best.set(xlabel=f"best {val_name} accuracy", title="per setting: seeds (dots) and mean (bar)")
    ax_best.grid(alpha=0.3, axis="x")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion(confusion, classes, title: str = "", normalize: bool = True) -> plt.Figure:
    """Confusion matrix, rows = true class; normalized per row (= recall on the diagonal)."""
    matrix = np.asarray(confusion, dtype=float)
    shown = matrix / matrix.sum(1, keepdims=True).clip(min=1) if normalize else matrix
    fig, ax = plt.subplots(figsize=(6, 5.2))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{shown[i, j]:.2f}" if normalize else f"{int(shown[i, j])}", ha="center",
                    va="center", fontsize=8, color="white" if shown[i, j] > 0.5 * shown.max() else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_class_counts(counts: pd.DataFrame) -> plt.Figure:
    """Bar chart of a classes x splits table of counts."""
    ax = counts.plot.bar(figsize=(9, 4), rot=0)
    ax.set(ylabel="images", title="images per class and split")
    ax.grid(axis="y", alpha=0.3)
    ax.figure.tight_layout()
    return ax.figure


def plot_faces(images, labels, classes, per_class: int = 8, title: str = "") -> plt.Figure:
    """A grid: one row per class, `per_class` faces each (the first ones of that class)."""
    images, labels = np.asarray(images), np.asarray(labels)
    rows = [images[np.flatnonzero(labels == i)[:per_class]] for i in range(len(classes))]
    return plot_image_rows(rows, list(classes), title)


def plot_image_rows(rows, row_titles, title: str = "", size: float = 1.0, captions=None) -> plt.Figure:
    """Images (gray or RGB), one list per row (rows may differ in length), each `size` inches wide; a title
    per row, and optionally a caption under each image (`captions`: lists like `rows`)."""
    columns = max(1, max(len(r) for r in rows))
    row_height = size + 0.25 + 0.2 * bool(captions)
    fig, axes = plt.subplots(len(rows), columns, figsize=(columns * size, len(rows) * row_height), squeeze=False)
    for row, (images, row_title) in enumerate(zip(rows, row_titles)):
        for col in range(columns):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(images):
                ax.imshow(images[col], cmap="gray", vmin=0, vmax=255)
                if captions:
                    ax.text(0.5, -0.04, captions[row][col], transform=ax.transAxes, ha="center", va="top",
                            fontsize=7)
        axes[row, 0].set_title(row_title, fontsize=9, loc="left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def check_chart_path(path) -> None:
    """DataError unless the name ends in .png: what `save` writes (a command checks it before its work)."""
    if Path(path).suffix.lower() != ".png":
        raise DataError(f"a chart is written as PNG: {quote(Path(path).name)} must end in .png")


def save(fig: plt.Figure, name, folder=None) -> Path:
    """Save a PNG as folder/name (a bare name goes into fer.paths.charts_dir(): charts/ or $FER_CHARTS)."""
    path = Path(name)
    if folder is not None or not path.is_absolute() and len(path.parts) == 1:
        path = Path(folder or charts_dir()) / path
    check_chart_path(path)
    with atomic_write(path) as tmp:  # a link at path is replaced, never written through
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return path


def plot_reliability(curves: dict[str, list[dict]], title: str = "") -> plt.Figure:
    """Reliability diagram: accuracy vs confidence per bin (from fer.calibrate.reliability_bins)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    for i, (name, bins) in enumerate(curves.items()):
        used = [b for b in bins if b["count"]]
        ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], "o-", color=f"C{i}", label=name)
    ax.set(xlabel="confidence of the top class", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def timeline_segments(times: np.ndarray, step: float) -> list[slice]:
    """Runs of a face's sorted times with no gap longer than 1.5 analysed-frame steps between neighbours."""
    breaks = np.flatnonzero(np.diff(times) > 1.5 * step) + 1
    edges = [0, *breaks.tolist(), len(times)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def plot_timeline(table: pd.DataFrame, face_id: int, smoothed: bool = True, title: str = "") -> plt.Figure:
    """One face's emotions over a video: its (smoothed) probabilities stacked over time, one colour a class.
    Where the face was not seen (a gap longer than 1.5 analysed frames) the chart is blank and shaded: a gap
    is shown as a gap, never bridged by a straight line."""
    rows = table[table["face_id"] == face_id].sort_values("time_s")
    prefix = "smooth_" if smoothed else "raw_"
    all_times = np.unique(table["time_s"].to_numpy())
    step = float(np.median(np.diff(all_times))) if len(all_times) > 1 else 1.0
    times = rows["time_s"].to_numpy()
    fig, ax = plt.subplots(figsize=(10, 2.8))
    classes = [c.removeprefix("smooth_") for c in table.columns if c.startswith("smooth_")]
    colors = [f"C{i % 10}" for i in range(len(classes))]
    segments = timeline_segments(times, step)
    for n, part in enumerate(segments):
        seg = rows.iloc[part]
        seg_times = seg["time_s"].to_numpy()
        if len(seg) == 1:  # one analysed frame: a bar one step wide
            seg_times = np.array([seg_times[0], seg_times[0] + step])
            seg = pd.concat([seg, seg])
        ax.stackplot(seg_times, *[seg[prefix + c] for c in classes], colors=colors,
                     labels=classes if n == 0 else (), step="post" if len(seg) < 3 else None)
    for before, after in zip(segments[:-1], segments[1:]):
        ax.axvspan(times[before.stop - 1], times[after.start], color="0.85", hatch="//", lw=0,
                   label="not seen" if before is segments[0] else None)
    ax.set(xlabel="time (s)", ylabel="probability", ylim=(0, 1),
           xlim=(table["time_s"].min(), max(table["time_s"].max(), table["time_s"].min() + 1e-3)),
           title=title or f"face {face_id}: {'smoothed' if smoothed else 'raw'} probabilities")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_emotion_shares(shares: pd.DataFrame) -> plt.Figure:
    """Per face, the share of the time each emotion was its label (fer.video.emotion_shares), as bars."""
    ax = shares.rename(index=lambda i: f"face {i}").plot.barh(stacked=True, figsize=(8, 0.6 + 0.5 * len(shares)),
                                                             color=[f"C{i % 10}" for i in range(len(shares.columns))])
    ax.set(xlabel="share of the time", xlim=(0, 1), ylabel="")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    ax.figure.tight_layout()
    return ax.figure


def plot_frames(frames, titles, width: float = 4.0) -> plt.Figure:
    """Colour pictures (video frames) side by side, each `width` inches wide, with a title each."""
    fig, axes = plt.subplots(1, len(frames), figsize=(width * len(frames), width * 0.8), squeeze=False)
    for ax, frame, title in zip(axes[0], frames, titles):
        ax.imshow(frame)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig
