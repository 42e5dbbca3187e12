# One-command entry points. `make sim` and `make test` install what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BOARD ?= sim
APT_PACKAGES := chrony socat tzdata slapd ldap-utils
APT_CROSS := gcc-i686-linux-gnu libc6-dev-i386-cross patchelf  # firmware/unix/build.sh's 32-bit builds
STAMP := $(VENV)/.setup-stamp
MP_SCRIPTS := $(wildcard tests/*_mp.py tools/*/*_mp.py)  # MicroPython scripts run on the unix port
# The 32-bit interpreter of the heap benchmarks: MicroPython's WebAssembly port (the version the tests'
# unix port is, 1.29 preview), from npm into a folder of the repo, run under Node.js.
NPM_DIR := build/npm
WASM_PKG := @micropython/micropython-webassembly-pyscript@1.29.0-6
NPM_STAMP := $(NPM_DIR)/.stamp-1.29.0-6

.PHONY: setup apt apt-cross apt-install npm bundle test frozen-test soak sim bench lint card clean firmware-inputs

setup: $(STAMP) apt npm

npm: $(NPM_STAMP)

$(NPM_STAMP):
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; \
	  else echo "Node.js and npm are needed (Debian packages nodejs npm)"; exit 1; fi; \
	fi
	mkdir -p $(NPM_DIR)
	npm install --silent --no-audit --no-fund --prefix $(NPM_DIR) $(WASM_PKG)
	touch $@

# The custom MicroPython image's inputs (board folders with ROMFS, frozen sources): firmware/README.md.
firmware-inputs: $(STAMP)
	$(VENV)/bin/clockterm firmware inputs --out build/firmware

$(STAMP): requirements-host.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-host.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# Debian packages the tests need (apt) and the 32-bit unix port builds (apt-cross); installed only when
# run as root and missing.
apt:
	@$(MAKE) -s apt-install PACKAGES="$(APT_PACKAGES)"

apt-cross:
	@$(MAKE) -s apt-install PACKAGES="$(APT_CROSS)"

apt-install:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (run 'make setup' as root, or apt-get install them)"; exit 1; fi; \
	fi

bundle: $(STAMP)
	$(VENV)/bin/clockterm bundle --board $(BOARD)

test: setup lint
	$(VENV)/bin/pytest -q -m "not soak and not frozen" -n 4

# The tests on the deployed layout: the unix port built with lib/ frozen in, as the pinned image carries it,
# for this 64-bit host and for 32-bit x86 with an ESP32's floats (firmware/unix/build.sh: it needs GitHub,
# or local clones named by MICROPYTHON_GIT, MBEDTLS_GIT and MPLIB_GIT, so it is not part of make test;
# docs/development.md, "The deployed layout").
frozen-test: setup apt-cross
	firmware/unix/build.sh
	for v in frozen frozen32; do \
	  echo "== the suite on build/unix/$$v"; \
	  CLOCKTERM_MICROPYTHON=$(CURDIR)/build/unix/$$v/micropython CLOCKTERM_FROZEN=1 \
	    $(VENV)/bin/pytest -q -m "not soak" -n 4 -rs || exit 1; \
	done

soak: setup
	$(VENV)/bin/pytest -q -m soak

# make sim TERMINALS=3: a fleet, with a live panel of the terminals and the central.
TERMINALS ?= 1
sim: setup
	$(VENV)/bin/clockterm sim --terminals $(TERMINALS)

bench: setup
	$(PY) -m bench

# Host code by pyproject.toml, lib/ by lib/ruff.toml (ruff finds it); the firmware outside lib/ is
# named here with the firmware rules (docs/development.md, "Lint").
lint: $(STAMP)
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff check --config lib/ruff.toml boot.py main.py $(MP_SCRIPTS)

# The employee card's pictures (docs/card/*.png), from the frames the SSD1306 driver sends
# (docs/employee-card.md; tests/test_employee_card.py fails when they are out of date).
card: setup
	$(PY) -m clockterm_host.card docs/card

clean:
	rm -rf build
