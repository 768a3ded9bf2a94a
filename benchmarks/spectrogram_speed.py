"""Spectrogram front end speed on one core: how many times faster than real time.

    python benchmarks/spectrogram_speed.py [--seconds 600]

Renders a piano performance with the project's synthesiser (a scale pattern, so the signal is
music-like), then times `audiosheet.frontend.spectrogram.spectrogram` on it (best of 3).
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: BLAS threads off before numpy loads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from audiosheet.corpus.synth import Performance, available_soundfonts, render  # noqa: E402
from audiosheet.frontend.spectrogram import spectrogram  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="length of the test audio")
    a = ap.parse_args()
    n = int(a.seconds / 0.25)
    notes = np.array([[i * 0.25, 0.5, 48 + (i * 7) % 36] for i in range(n)])
    audio = render(notes, Performance("TimGM6mb", 0), available_soundfonts())
    dur = len(audio) / 22050
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        spec = spectrogram(audio)
        best = min(best, time.perf_counter() - t)
    print(f"audio: {dur:.1f} s -> spectrogram {spec.shape} in {best:.3f} s (best of 3, 1 thread)")
    print(f"speed: {dur / best:.0f}x real time (target >= 200x)")


if __name__ == "__main__":
    main()
