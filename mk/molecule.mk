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
# running). Cold fresh-clone CI of 2026-12-01 (3241 s): process = lint 91 s, unit 299,
# integration 632, ha 1344, rabbitmq 756 (3122 s); systemd = e2e 595 (image builds
# included), fleet 2002, default 393 (2990 s). Since: ha -114 s (test_restore converges no
# more: 168 s), integration +15 (log rotation); e2e +~60 (make scale, loopback probes,
# expression-browser links: 496 s warm), fleet +~210 (test_scale: retire and add a worker
# host under a producer, ~180 s); ha +240 (test_pki_rotation) and +~200 to ~350
# (test_upgrade.py: four converges of the broker roles, 34 + 36 + 58 + 31 s on a quiet
# machine, 64 + 68 + 136 + 62 s with CI's rabbitmq and fleet beside it). Measured
# 2026-12-02, all of `make test-molecule-ha`: 1552 s with two other scenarios beside it
# (before test_pki_rotation); ~1075 s on a quiet machine with it (1646 s, of which ~570 s
# a restore stuck on a Redis that refused SIGTERM while writing its initial AOF). Process
# lane now ~3500 s, systemd ~3260. Moving default (393 s) to the process lane would make
# it the longer one.
TEST_TARGETS += test-molecule-ha test-molecule-rabbitmq
TEST_SYSTEMD_TARGETS += test-molecule-default
