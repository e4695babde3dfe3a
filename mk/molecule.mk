# Molecule scenarios for the pki, redis, redis_sentinel and rabbitmq roles (systemd containers).
# Docker objects are prefixed cf-mol-; the node image is built here, idempotently.
MOLECULE_IMAGE ?= celery-fleet/molecule-node:bookworm
MOLECULE := cd $(CURDIR) && NO_COLOR=1 PY_COLORS=0 ANSIBLE_NOCOLOR=1 $(BIN)/molecule -c molecule/base.yml

.PHONY: molecule-image test-molecule test-molecule-default test-molecule-ha test-molecule-rabbitmq

molecule-image: ## Build the systemd node image for molecule (FROM debian:bookworm-slim)
	docker build -q -t $(MOLECULE_IMAGE) -f molecule/Dockerfile molecule >/dev/null

test-molecule-default: setup molecule-image ## Molecule: one TLS-only Redis node (create, check, converge, idempotence, verify, destroy)
	$(MOLECULE) test -s default

test-molecule-ha: setup molecule-image ## Molecule: primary + 2 replicas + 3 Sentinels, failover and re-converge
	$(MOLECULE) test -s ha

test-molecule-rabbitmq: setup molecule-image wheelhouse ## Molecule: check mode on the fresh nodes, then a 3-node TLS-only RabbitMQ cluster, users' permissions, SIGKILL of a quorum queue's leader, a Celery worker on it (fleet_broker=rabbitmq)
	$(MOLECULE) test -s rabbitmq

test-molecule: test-molecule-default test-molecule-ha test-molecule-rabbitmq ## The roles' molecule scenarios (default, ha, rabbitmq)

# Lanes of `make test` (Makefile): balanced by measured durations (2 cores, the other lane
# running). Cold CI on a new machine, 2026-12-02 (ci28, fresh clone of 16b81c8, no images,
# no venv; other test runs beside it for part of the time): 2673 s; process = lint 34 s,
# unit 133, integration 509, ha 722, rabbitmq 1051; systemd = e2e 443 (image builds
# included), fleet 1705, default 446. Since: ha +~240 (test_pki_rotation: three converges of
# site.yml) and +~200 to ~350 (test_upgrade.py: four converges of the broker roles, 34 + 36
# + 58 + 31 s on a quiet machine, 64 + 68 + 136 + 62 s with two scenarios beside it); all of
# `make test-molecule-ha` with both: ~1075 s on a quiet machine; fleet +~20 (the data nodes'
# disk check); unit +~60 (the CA rollover's controller steps); default +~65 (the check-mode
# converge of the fresh node: 63 s of playbook against converge's 71, load ~11 on 2 cores;
# whole scenario 810 s at that load).
# Measured in both lanes on this machine, 2026-12-02 (ci32, fresh clone of e189ef5, images
# built, new venv): 2941 s; process = lint 47, unit 194, integration 553, ha 1655, rabbitmq
# 457 (2906); systemd = e2e 493, fleet 1720, default 378 (2591). So now: process = lint,
# integration, e2e, ha (2748); systemd = unit, fleet, rabbitmq, default (2749). Fleet
# (systemd lane, from ~200 s) builds the molecule image and the wheelhouse before e2e
# (~600 s) and ha (~1100 s) need them. Since: rabbitmq +~130 to ~520 (the check-mode converge
# of the three fresh nodes: 128 s of playbook at load ~6, 516 s at load ~12 against that run's
# converge 370, idempotence 259, verify 474; whole scenario 1819 s at that load, two other
# scenarios beside it); fleet +~130 to ~200 (the beat host kill: 133 s at load ~20). From
# ci33 (process 2790, systemd 2878) that makes the systemd lane ~3300-3600: default (374)
# moves to the process lane (~3170 against ~2950-3200).
TEST_TARGETS += test-molecule-ha test-molecule-default
TEST_SYSTEMD_TARGETS += test-molecule-rabbitmq
