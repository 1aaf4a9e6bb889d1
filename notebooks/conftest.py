"""nbval runs these notebooks as a quick check: FER_SMOKE=1 shrinks 02's training and 03's evaluation,
and generated faces stand in for FER-2013 where the real data is not here."""
import os
import tempfile
from pathlib import Path

from tests.conftest import write_fer_layout

os.environ["FER_SMOKE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
_dataset_1 = Path(__file__).resolve().parent.parent / "dataset_1"
if not os.environ.get("FER_DATA") and not any(p.name != "README.md" for p in _dataset_1.iterdir()):
    os.environ["FER_DATA"] = str(write_fer_layout(Path(tempfile.mkdtemp(prefix="fer-nbval-")), per_class=12))
