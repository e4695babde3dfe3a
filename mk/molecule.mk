# Molecule scenarios for the pki, redis, redis_sentinel and rabbitmq roles (systemd containers).
# Docker objects are prefixed cf-mol-; the node image is built here, idempotently.
MOLECULE_IMAGE ?= celery-fleet/molecule-node:bookworm
MOLECULE := cd $(CURDIR) && NO_COLOR=1 PY_COLORS=0 ANSIBLE_NOCOLOR=1 $(BIN)/molecule -c molecule/base.yml

.PHONY: molecule-image test-molecule test-molecule-default test-molecule-ha test-molecule-rabbitmq

molecule-image: ## Build the systemd node image for molecule (FROM debian:bookworm-slim)
	docker build -q -t $(MOLECULE_IMAGE) -f molecule/Dockerfile molecule >/dev/null

test-molecule-default: setup molecule-image ## Molecule: one TLS-only Redis node (create, converge, idempotence, verify, destroy)
	$(MOLECULE) test -s default

test-molecule-ha: setup molecule-image ## Molecule: primary + 2 replicas + 3 Sentinels, failover and re-converge
	$(MOLECULE) test -s ha

test-molecule-rabbitmq: setup molecule-image wheelhouse ## Molecule: 3-node TLS-only RabbitMQ cluster, users' permissions, SIGKILL of a quorum queue's leader, a Celery worker on it (fleet_broker=rabbitmq)
	$(MOLECULE) test -s rabbitmq

test-molecule: test-molecule-default test-molecule-ha test-molecule-rabbitmq ## The roles' molecule scenarios (default, ha, rabbitmq)

# Lanes of `make test` (Makefile): balanced by measured durations (2 cores, the other lane
# running; fresh-clone CI of 2026-12-01, 2622 s). Process lane: lint 65 s, unit 206,
# integration 646 (~+50 with the role's Sentinel timings), ha 616 + ~170 (backup and
# restore: 168 s on 2026-12-02, without a converge of its own), rabbitmq 745 = ~2500 s.
# Systemd lane: e2e 390 + ~120 (Sentinel quorum alert), fleet 1808 minus its verbose
# converge (~380 s), default 283 = ~2220 s.
TEST_TARGETS += test-molecule-ha test-molecule-rabbitmq
TEST_SYSTEMD_TARGETS += test-molecule-default
