# tsunagu — the two commands are `make demo` and `make test`; everything they need is
# installed on first use (Python venv, Go-built Kubernetes tools cached by version).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PYTEST    := hack/pytest.sh
# The member clusters of tests/integration/test_operator_multicluster.py (hack/members.sh) take
# their names and state from the hub's: CLUSTER_NAME-m1, -m2, state beside TSUNAGU_STATE.
# The cluster of tests/e2e/test_real_nodes.py (tests/support/realnodes.py): real kubelets only.
# TSUNAGU_REAL_CLUSTER and TSUNAGU_REAL_STATE choose another name and state (a second checkout).
TSUNAGU_REAL_CLUSTER ?= tsunagu-real
TSUNAGU_REAL_STATE ?= $(CURDIR)/.cluster/$(TSUNAGU_REAL_CLUSTER)
REAL_CLUSTER := CLUSTER_NAME=$(TSUNAGU_REAL_CLUSTER) TSUNAGU_STATE=$(TSUNAGU_REAL_STATE)

.PHONY: help venv tools cluster-up cluster-down lint install-check unit integration e2e test demo demo-down bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "[tsunagu] creating the Python venv in $(VENV)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## create the Python venv with the project and its dev tools

tools: ## build kube-apiserver, etcd, kwok, helm… from Go modules (cached by version)
	@hack/tools.sh

cluster-up: venv tools ## start the local kwok cluster with simulated GPU nodes
	@hack/cluster.sh up

cluster-down: ## stop the local cluster (and the real-node and member ones); no process is left
	@hack/cluster.sh down
	@$(REAL_CLUSTER) hack/cluster.sh down
	@hack/members.sh down

lint: venv ## ruff, mypy and the import-linter layer contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

install-check: venv ## install the wheel into a fresh venv as the Dockerfile does
	@hack/check-install.sh

unit: venv ## pure tests, no cluster
	$(PYTEST) -q tests/unit

integration: cluster-up ## tests against the real API server, scheduler and controller-manager
	$(PYTEST) -q --durations=10 -m integration tests/integration

e2e: cluster-up ## chart, probes and Prometheus end to end
	$(PYTEST) -q --durations=10 -m e2e tests/e2e

test: ## lint + unit + integration + e2e (what CI runs)
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory install-check
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory e2e
	@if [ "$${CI:-}" = "true" ]; then hack/cluster.sh down; $(REAL_CLUSTER) hack/cluster.sh down; hack/members.sh down; fi

# The demo has clusters of its own, so `make demo` and `make test` never disturb each other: the
# hub (DEMO_CLUSTER) and a member, the GPU cloud in Fukuoka, named $(DEMO_CLUSTER)-fukuoka with
# its state in $(DEMO_STATE)/member-fukuoka (hack/demo.sh derives both).
DEMO_CLUSTER ?= tsunagu-demo
DEMO_STATE ?= $(CURDIR)/.cluster/demo-cluster
DEMO_ENV  := CLUSTER_NAME=$(DEMO_CLUSTER) TSUNAGU_STATE=$(DEMO_STATE)

# hack/demo.sh brings the clusters up itself: with real nodes where they can run (it says which).
demo: venv tools ## the story: data in Tokyo, jobs placed by measured latency, in two clusters
	@$(DEMO_ENV) hack/demo.sh up

demo-down: ## remove the demo and stop both its clusters
	@$(DEMO_ENV) hack/demo.sh down || true
	@$(DEMO_ENV) hack/demo.sh clusters-down

bench: venv ## benchmarks (engine, simulator, latency, operator); figures go to docs/benchmarks.md
	@hack/bench.sh

clean: ## stop the clusters and remove the venv and local state (the tool cache stays)
	@$(DEMO_ENV) hack/demo.sh down 2>/dev/null || true
	@$(DEMO_ENV) hack/demo.sh clusters-down || true
	@hack/cluster.sh down || true
	@hack/members.sh down || true
	rm -rf $(VENV) .cluster .cluster-m1 .cluster-m2 .pytest_cache .mypy_cache .ruff_cache .hypothesis
