"""Cost of a note-posteriorgram audio input (basic-pitch's ONNX model) against today's audio
path (log spectrogram + snippet CNN), in indexed audio snippets per second on one core.

    pip download basic-pitch==0.4.0 --no-deps -d /tmp/bp && unzip -q /tmp/bp/*.whl -d /tmp/bp/x
    python benchmarks/posteriorgram_cost.py --onnx /tmp/bp/x/basic_pitch/saved_models/icassp_2022/nmp.onnx

basic-pitch (Spotify, Apache-2.0; Bittner et al., "A lightweight instrument-agnostic model for
polyphonic note transcription and multipitch estimation", ICASSP 2022) ships its network as ONNX
inside the wheel: input 2-s windows of 22,050 Hz mono audio (43,844 samples), output per window
172 frames (86 fps) of note (88), onset (88) and contour (264) posteriors. Its own inference
overlaps windows by 30 frames; so does this script. An audio collection indexes one snippet every
``geometry.INDEX_AUDIO_HOP`` frames (0.25 s), so snippets/s = 4 x (audio seconds per second).

Prints both paths' speed; the posteriorgram path still needs the snippet CNN on its output, so its
figure is an upper bound of that path's speed.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

WINDOW = 43844  # samples per basic-pitch window (2 s at 22,050 Hz minus one hop of 256)
OVERLAP = 30 * 256  # samples shared by consecutive windows, as basic-pitch's own inference


def posteriorgram(session, audio: np.ndarray) -> np.ndarray:
    """(frames, 88) note posteriors of 22,050 Hz mono ``audio`` (float32), windows overlapped and
    their overlapping halves trimmed as in basic-pitch's inference."""
    hop = WINDOW - OVERLAP
    pad = np.concatenate([np.zeros(OVERLAP // 2, np.float32), audio.astype(np.float32)])
    starts = range(0, len(pad), hop)
    wins = np.stack([np.pad(pad[s:s + WINDOW], (0, max(0, WINDOW - len(pad[s:s + WINDOW])))) for s in starts])
    name = session.get_inputs()[0].name
    outs = []
    for i in range(0, len(wins), 8):
        note = session.run(None, {name: wins[i:i + 8, :, None]})
        note = [o for o in note if o.shape[-1] == 88][0]  # the first 88-wide output (note or onset)
        outs.append(note[:, 15:-15])
    return np.concatenate(outs).reshape(-1, 88)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", required=True, help="basic-pitch's nmp.onnx (from its PyPI wheel)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the test audio")
    ap.add_argument("--model", default="snippet-bl2-att84")
    a = ap.parse_args()
    import onnxruntime as ort
    import torch

    from audiosheet.corpus.synth import Performance, available_soundfonts, render
    from audiosheet.frontend.audio import audio_snippets
    from audiosheet.frontend.spectrogram import DEFAULT, spectrogram
    from audiosheet.geometry import INDEX_AUDIO_HOP
    from audiosheet.models.checkpoint import load_model
    from audiosheet.models.embed import Embedder

    torch.set_num_threads(1)
    n = int(a.seconds / 0.25)
    notes = np.array([[i * 0.25, 0.5, 48 + (i * 7) % 36] for i in range(n)])
    audio = render(notes, Performance("TimGM6mb", 0), available_soundfonts())
    dur = len(audio) / DEFAULT.sample_rate
    per_s = DEFAULT.fps / INDEX_AUDIO_HOP  # indexed audio snippets per second of audio

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.onnx, opts, providers=["CPUExecutionProvider"])
    posteriorgram(sess, audio[:DEFAULT.sample_rate * 4])  # warm-up
    t = time.perf_counter()
    post = posteriorgram(sess, audio)
    t_post = time.perf_counter() - t

    emb = Embedder(load_model(a.model), batch=64)
    t = time.perf_counter()
    wins, _ = audio_snippets(spectrogram(audio), context=emb.config.context, hop=INDEX_AUDIO_HOP)  # as `index add`
    t_spec = time.perf_counter() - t
    emb.audio(wins[:64])  # warm-up (tracing)
    t = time.perf_counter()
    emb.audio(wins)
    t_emb = time.perf_counter() - t
    ours = t_spec + t_emb
    print(f"audio: {dur:.1f} s; one thread")
    print(f"posteriorgram (basic-pitch ONNX): {post.shape} in {t_post:.2f} s = {dur / t_post:.1f}x real time "
          f"= {per_s * dur / t_post:.0f} snippets/s before any snippet CNN")
    print(f"today's path: spectrogram + snippets {t_spec:.2f} s + snippet CNN on {len(wins)} windows {t_emb:.2f} s "
          f"= {dur / ours:.1f}x real time = {len(wins) / ours:.0f} snippets/s")
    print(f"posteriorgram + today's CNN (estimate): {per_s * dur / (t_post + t_emb):.0f} snippets/s "
          f"({ours / (t_post + t_emb):.2f}x today's speed)")


if __name__ == "__main__":
    main()
