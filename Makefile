# The two setup commands (README): `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install the package on first use; later runs reuse it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: demo test install install-test clean

demo: $(VENV)/.stamp-install
	$(BIN)/vjepa demo

test: $(VENV)/.stamp-test system-libs
	$(BIN)/python -m pytest -q

install: $(VENV)/.stamp-install
install-test: $(VENV)/.stamp-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-install: pyproject.toml setup.py | $(VENV)/bin/python
	$(PIP) install -q -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml setup.py $(VENV)/.stamp-install
	$(PIP) install -q -e '.[test]'
	touch $@

# FFmpeg shared libraries for the optional torchcodec decoder (the other decoders bundle FFmpeg).
# Installed with apt when running as root on Debian/Ubuntu; otherwise its tests are skipped.
FFMPEG_LIBS := libavcodec59 libavformat59 libavutil57 libswscale6 libavdevice59 libavfilter8 libswresample4
.PHONY: system-libs
system-libs:
	@if ldconfig -p 2>/dev/null | grep -q 'libavutil\.so\.5[6-9]'; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing FFmpeg shared libraries for torchcodec: $(FFMPEG_LIBS)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(FFMPEG_LIBS) >/dev/null) \
	    || echo "note: could not install FFmpeg shared libraries; torchcodec tests will be skipped"; \
	else echo "note: FFmpeg shared libraries not found; torchcodec tests will be skipped"; fi

# A real single-machine SLURM (2 fake nodes, accounting) for the `slurm` tests and for trying
# `vjepa launch`: apt-installs and starts it as root; see slurm/README.md.
.PHONY: slurm-cluster
slurm-cluster:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  slurm/local_cluster.sh install && slurm/local_cluster.sh start; \
	else echo "note: the local SLURM cluster needs root and apt-get (see slurm/README.md);" \
	  "tests marked slurm will be skipped"; fi

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
