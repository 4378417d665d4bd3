# aifhub: `make run` sets up and runs the hub; `make test` sets up and runs the tests.
PYTHON ?= $(shell ./scripts/pick-python)
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`: each test module stays on one worker (its hub is started once) and the
# cluster tests share one worker and one local cluster; 0 runs the suite in this process
TEST_WORKERS ?= 2

.PHONY: run test setup test-tools test-dex lint control-plane helm cluster slurm slurm-tools bench nbgrader-tests clean

run: setup
	$(BIN)/aifhub up $(ARGS)

test: setup test-tools slurm-tools test-dex lint control-plane helm
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# ruff's rules and format are in pyproject.toml (`ruff format hub tests bench` formats the tree)
lint: setup
	$(BIN)/ruff check hub tests bench
	$(BIN)/ruff format --check hub tests bench

setup: $(VENV)/.installed node_modules/.installed tests/credverify/node_modules/.installed hub/aifhub/labdata/.built \
	tests/a11y/node_modules/.installed

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: no usable Python (>= 3.11 with venv) found" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# jsonschema imports rfc3987-syntax eagerly when present (~1 s of grammar building in every
	# sandbox, hub and service start); no Jupyter schema uses the IRI formats it checks.
	$(BIN)/python -m pip uninstall --quiet --yes rfc3987-syntax
	# sandboxes load nothing from the internet: no JupyterLab news feed
	$(BIN)/jupyter labextension disable --level=sys_prefix "@jupyterlab/apputils-extension:announcements" >/dev/null 2>&1
	$(BIN)/jupyter labextension lock --level=sys_prefix "@jupyterlab/apputils-extension:announcements" >/dev/null 2>&1
	@touch $@

node_modules/.installed: package.json
	@command -v npm >/dev/null 2>&1 || { echo "make: npm (and node) are needed for the proxy: install Node.js >= 18 with npm (Debian: apt-get install nodejs npm)" >&2; exit 1; }
	npm install --no-audit --no-fund --silent
	@touch $@

# aifhub's bar inside JupyterLab: TypeScript built with JupyterLab's builder into a prebuilt lab extension, which
# the package carries (hub/aifhub/labdata/labextensions/aifhub-bar/) and sandboxes find through JUPYTER_PATH
hub/aifhub/labdata/.built: labextension/package.json labextension/src/index.ts labextension/style/index.css $(VENV)/.installed
	npm install --prefix labextension --no-audit --no-fund --silent
	cd labextension && node_modules/.bin/tsc
	cd labextension && node node_modules/@jupyterlab/builder/lib/build-labextension.js \
		--core-path "$$($(CURDIR)/$(BIN)/python -c 'import jupyterlab, os; print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging"))')" .
	@touch $@

# The browser tests check every aifhub page and the JupyterLab bar with axe-core (WCAG 2.1 A and AA rules)
tests/a11y/node_modules/.installed: tests/a11y/package.json
	npm install --prefix tests/a11y --no-audit --no-fund --silent
	@touch $@

# The credential tests verify aifhub's Open Badges with Digital Bazaar's libraries (an independent verifier)
tests/credverify/node_modules/.installed: tests/credverify/package.json
	npm install --prefix tests/credverify --no-audit --no-fund --silent
	@touch $@

# The browser tests drive Debian's Chromium; the Kubernetes grading tests run their pods in bubblewrap.
# Install them when we can (root with apt), else those tests skip.
TEST_TOOLS := /usr/bin/chromium:chromium /usr/bin/bwrap:bubblewrap
test-tools:
	@for tool in $(TEST_TOOLS); do path=$${tool%%:*}; pkg=$${tool#*:}; \
	  test -x $$path || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && { \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg >/dev/null 2>&1 || { \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg >/dev/null 2>&1; }; }; } || \
	  echo "make: $$path is missing and could not be installed (apt-get install $$pkg, as root): the tests that need it will skip" >&2; \
	done

# The slurm tests start a real Slurm from Debian's packages (tests/localslurm; docs/slurm.md): installed here as
# root with apt, as test-tools does for chromium
SLURM_PACKAGES := munge slurmctld slurmd slurm-client slurm-wlm-basic-plugins slurmdbd slurmrestd \
  slurm-wlm-jwt-plugin slurm-wlm-mysql-plugin mariadb-server
slurm-tools:
	@test -x /usr/sbin/slurmrestd -a -x /usr/sbin/mariadbd -a -x /usr/sbin/munged -a -x /usr/sbin/slurmdbd || { \
	  [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && { \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SLURM_PACKAGES) >/dev/null 2>&1 || { \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SLURM_PACKAGES) >/dev/null 2>&1; }; }; } || \
	  echo "make: Slurm is missing and could not be installed (apt-get install $(SLURM_PACKAGES), as root)" >&2

# `eval "$$(make -s slurm)"`: a local Slurm (2 nodes with 2 GPUs each) kept running in .slurm/, and its settings
# as export lines for `aifhub up --sandboxes slurm`; `make slurm ARGS=--stop` stops it
slurm: setup slurm-tools
	@PYTHONPATH=tests $(BIN)/python -m localslurm $(ARGS)

# The login tests sign in with Dex, an OpenID Connect provider built from its Go module (cached by version
# under ~/.cache/aifhub/dex/, so only the first run builds it).
test-dex:
	@./scripts/build-dex >/dev/null

# The Kubernetes control plane of the cluster tests (pytest -m cluster) and `make cluster`, built from its Go
# modules (k8s/controlplane/go.mod) once and cached outside the checkout; needs Go >= 1.26.
control-plane:
	@if command -v go >/dev/null 2>&1; then scripts/build-control-plane >/dev/null; \
	else echo "make: Go (>= 1.26) is not installed: the cluster tests cannot build their control plane and will fail" >&2; fi

# Helm, with which the chart tests (tests/test_cluster_chart.py) render and install the zero-to-jupyterhub chart,
# built from its Go module (k8s/helm/go.mod) once and cached beside the control plane; built after the control
# plane, it reuses Go's build cache of the k8s.io libraries both use.
helm: control-plane
	@if command -v go >/dev/null 2>&1; then scripts/build-helm >/dev/null; \
	else echo "make: Go (>= 1.26) is not installed: the chart tests cannot build helm and will fail" >&2; fi

# A local cluster like the one the cluster tests use; prints its kubeconfig, runs until Ctrl-C (ARGS: --help)
cluster: setup test-tools control-plane
	PYTHONPATH=tests $(BIN)/python -m localcluster $(ARGS)

# nbgrader 0.9.6's own tests of fetch_assignment, submit, fetch_feedback and list against aifhub's
# exchange (docs/grading.md); PYTEST_ARGS go to pytest, e.g. PYTEST_ARGS="-k submit -x"
nbgrader-tests: setup
	scripts/nbgrader-tests $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules
