# Two commands for people: `make run` and `make test`. Both install whatever is missing first.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
STAMP := $(VENV)/.installed
APT_STAMP := var/.apt-installed
# command -> Debian package that provides it
APT_CMDS := redis-server:redis-server espeak-ng:espeak-ng sox:sox baresip:baresip kamailio:kamailio \
	ip:iproute2 linphonec:linphone-cli chromium:chromium tshark:tshark node:nodejs npm:npm rtpengine:rtpengine-daemon
# Kamailio module -> Debian package (the softphone: SIP over WebSocket, ephemeral credentials)
APT_KAMAILIO_MODULES := websocket:kamailio-websocket-modules auth_ephemeral:kamailio-autheph-modules
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS ?=
# `make run` is a demo on this machine: demo accounts with one-time passwords printed at start (loopback only).
# `make run DEMO=` runs without them (the first start then prints a one-time admin password).
DEMO ?= --demo

.PHONY: run test bench-deps
NODE_STAMP := node_modules/.installed
# JsSIP for the desk's softphone, bundled from the npm package into one static file (no CDN, no build at run time).
JSSIP := desk_api/web/vendor-jssip.min.js

run: $(APT_STAMP) $(STAMP) $(JSSIP)
	$(BIN)/atiende run $(DEMO) $(ARGS)

test: $(APT_STAMP) $(STAMP) $(NODE_STAMP) $(JSSIP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

# Tools only the benchmarks use (bench/README.md); `make test` does not need them.
bench-deps:
	@command -v wrk >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }

$(APT_STAMP):
	@missing=""; for pair in $(APT_CMDS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; done; \
	for pair in $(APT_KAMAILIO_MODULES); do mod=$${pair%%:*}; pkg=$${pair##*:}; \
	  ls /usr/lib/*/kamailio/modules/$$mod.so >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing libsox-fmt-base; \
	fi
	@mkdir -p var && touch $@

# axe-core (the pages' accessibility checks), JsSIP and esbuild (the softphone's bundle): package.json, locked.
$(NODE_STAMP): package.json package-lock.json $(APT_STAMP)
	npm ci --no-audit --no-fund --silent
	@touch $@

$(JSSIP): $(NODE_STAMP)
	node_modules/.bin/esbuild node_modules/jssip/lib/JsSIP.js --bundle --format=iife --global-name=JsSIP --minify \
	  --target=es2019 --log-level=warning --outfile=$@

$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,models]'
	$(BIN)/atiende models prepare
	@touch $@
