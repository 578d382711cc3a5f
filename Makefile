# The two commands: `make lab` and `make test`. Both first install whatever is missing
# (Debian packages with apt-get, Python packages into .venv); re-running is fast.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := softhsm2 opensc krb5-kdc krb5-admin-server krb5-user krb5-pkinit tshark postgresql
STAMP := $(VENV)/.installed

.PHONY: lab test deps system-deps python-deps bench bench-callgrind lint clean

lab: deps
	$(VENV)/bin/telekey lab

test: deps
	@$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

bench: deps
	$(PY) bench/codec.py

# Instructions per AP exchange (deterministic); valgrind is only needed here, not for `test`.
bench-callgrind: deps
	@command -v valgrind >/dev/null || { export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q && apt-get install -y -q --no-install-recommends valgrind; }
	$(PY) bench/callgrind_ap.py

lint: deps
	$(VENV)/bin/ruff check . && $(VENV)/bin/mypy

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

# Debian's own python3 lacks ensurepip until python3-venv is installed.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q && apt-get install -y -q --no-install-recommends python3-venv; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
