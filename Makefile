# The two commands: `make lab` and `make test`. Both first install whatever is missing
# (Debian packages with apt-get, Python packages into .venv); re-running is fast.
SHELL := /bin/bash
# The venv is built on Debian's own python3, not on whichever python3 comes first in PATH:
# Debian builds it with PGO and LTO and links libpython into the executable, and on our code it
# runs 15-30% faster than a default source build such as pyenv's (no PGO, a shared libpython);
# the KDC's CPU per PKINIT login follows (docs/performance.md). Any other: make PYTHON=...
PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
# debootstrap builds the Debian chroot that holds Heimdal's kinit (tests/heimdal.py): Heimdal's
# packages conflict with MIT's, so they cannot be installed here next to them. faketime
# (libfaketime) steps one daemon's wall clock in tests/e2e/test_faults_devices.py. chromium and
# chromium-driver drive the provisioning console headless (tests/e2e/test_provisioning_console.py).
APT_PACKAGES := softhsm2 opensc krb5-kdc krb5-admin-server krb5-user krb5-pkinit tshark postgresql \
	debootstrap faketime chromium chromium-driver
STAMP := $(VENV)/.installed

.PHONY: lab test fuzz deps system-deps python-deps heimdal bench bench-callgrind lint docs clean

lab: deps
	$(VENV)/bin/telekey lab

test: deps
	@$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

# The Heimdal chroot (about a minute, once; kept in /var/cache/telekey): the interop tests build
# it on first use too.
heimdal: deps
	$(PY) -m tests.heimdal build

# The long fuzz run (tests/fuzz/__init__.py): every decoder `make test` fuzzes, and the
# non-ASN.1 ones, from mutated real messages (MIT's and Heimdal's), up to 100x the CI run's
# examples each, within FUZZ_SECONDS. FUZZ_ENGINE=hypothesis shrinks what it finds;
# FUZZ_ENGINE=atheris is coverage-guided over the main decoders and installs the `fuzz` extra.
FUZZ_SECONDS ?= 600
FUZZ_ENGINE ?= mutate
fuzz: deps
	@if [ "$(FUZZ_ENGINE)" = atheris ]; then $(PY) -c 'import atheris' 2>/dev/null || \
	    $(PY) -m pip install -q --disable-pip-version-check -e '.[test,fuzz]'; fi
	$(PY) -m tests.fuzz --engine $(FUZZ_ENGINE) --seconds $(FUZZ_SECONDS)

bench: deps
	$(PY) bench/codec.py

# Instructions per AP exchange (deterministic); valgrind is only needed here, not for `test`.
bench-callgrind: deps
	@command -v valgrind >/dev/null || { export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q && apt-get install -y -q --no-install-recommends valgrind; }
	$(PY) bench/callgrind_ap.py

lint: deps
	$(VENV)/bin/ruff check . && $(VENV)/bin/mypy

# The generated references (docs/configuration.md, docs/cli.md; a test checks they are current)
# and the services picture from its Graphviz source (graphviz is only needed here).
docs: deps
	$(PY) -m telekey.reference
	@command -v dot >/dev/null || { export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q && apt-get install -y -q --no-install-recommends graphviz; }
	dot -Tsvg docs/img/services.dot -o docs/img/services.svg

deps: system-deps python-deps

# dpkg-query tells us cheaply whether anything is missing; apt-get runs only then.
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:" $$missing; \
	    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi

python-deps: $(STAMP)

# Debian's own python3 lacks ensurepip until python3-venv is installed (which also brings
# python3 itself where it is missing). A venv on another interpreter is made anew.
$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q && apt-get install -y -q --no-install-recommends python3-venv; }
	@if [ -x $(PY) ] && [ "$$($(PY) -c 'import sys; print(sys._base_executable)')" != \
	    "$$(readlink -f $(PYTHON))" ]; then echo "rebuilding $(VENV) on $(PYTHON)"; rm -rf $(VENV); fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
