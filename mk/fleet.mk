# Celery fleet on servers: workers, beat and Flower (roles celery, flower), deployed with
# playbooks/site.yml. `make deploy INVENTORY=path/to/hosts.yml`, `make verify INVENTORY=...`.
# Docker objects of the molecule scenario are prefixed cf-fleet-.
INVENTORY ?= inventory.example/hosts.yml
# Extra ansible-playbook arguments, e.g. DEPLOY_ARGS="--limit node2 --tags celery".
DEPLOY_ARGS ?=
# Controller-side wheelhouse the hosts install from (--no-index): celery-fleet, the pinned
# runtime (requirements.txt) and APP_REQUIREMENTS (your app's pip specs, space-separated).
WHEELHOUSE ?= build/wheelhouse
APP_REQUIREMENTS ?=
# Python of the hosts (Debian 12: 3.11) and their architecture.
WHEEL_PYTHON ?= 3.11
WHEEL_ARCH ?= $(shell uname -m)

.PHONY: wheelhouse deploy verify restart-workers upgrade-redis backup restore ca-rollover test-molecule-fleet

$(WHEELHOUSE)/.done: requirements.txt pyproject.toml $(shell find src -name '*.py' 2>/dev/null) | $(VENV)/.done
	@echo "==> wheelhouse $(WHEELHOUSE) (python $(WHEEL_PYTHON), $(WHEEL_ARCH))"
	@rm -rf $(WHEELHOUSE) && mkdir -p $(WHEELHOUSE)
	@$(BIN)/pip download -q --disable-pip-version-check --only-binary=:all: --implementation cp \
	  --python-version $(WHEEL_PYTHON) --platform manylinux2014_$(WHEEL_ARCH) \
	  --platform manylinux_2_17_$(WHEEL_ARCH) --platform manylinux_2_28_$(WHEEL_ARCH) \
	  -d $(WHEELHOUSE) -r requirements.txt async-timeout==5.0.1 $(APP_REQUIREMENTS) 2>&1 \
	  | { grep -v '^WARNING: Location' || true; }
	@# async-timeout: redis-py needs it on Debian 12's Python 3.11.2 (< 3.11.3).
	@$(BIN)/pip wheel -q --disable-pip-version-check --no-deps -w $(WHEELHOUSE) . 2>&1 \
	  | { grep -v '^WARNING: Location' || true; }
	@{ cat requirements.txt; echo "async-timeout==5.0.1"; } > $(WHEELHOUSE)/requirements.txt
	@touch $@

wheelhouse: $(WHEELHOUSE)/.done ## Wheels the hosts install from (no PyPI on the hosts)

deploy: setup wheelhouse ## Deploy everything: make deploy INVENTORY=path/to/hosts.yml
	$(BIN)/ansible-playbook -i $(INVENTORY) -e fleet_wheelhouse=$(abspath $(WHEELHOUSE)) playbooks/site.yml $(DEPLOY_ARGS)

restart-workers: setup wheelhouse ## Rolling restart of the workers, one host at a time: make restart-workers INVENTORY=...
	$(BIN)/ansible-playbook -i $(INVENTORY) -e fleet_wheelhouse=$(abspath $(WHEELHOUSE)) -e celery_rolling_restart=true playbooks/celery.yml $(DEPLOY_ARGS)

# The worker hosts to add or retire, comma-separated (inventory names).
HOSTS ?=

add-workers: setup wheelhouse ## Converge only new worker hosts (and the monitoring host, which scrapes them): make add-workers INVENTORY=... HOSTS=name[,name]
	@test -n "$(HOSTS)" || { echo "make add-workers: set HOSTS=name[,name], hosts you added to celery_workers (docs/operations.md, \"Scaling the workers\")" >&2; exit 2; }
	$(BIN)/ansible-playbook -i $(INVENTORY) -e fleet_wheelhouse=$(abspath $(WHEELHOUSE)) --limit '$(HOSTS),monitoring' \
	  playbooks/celery.yml playbooks/monitoring.yml $(DEPLOY_ARGS)

retire-workers: setup ## Drain and remove worker hosts, one at a time; Flower forgets them: make retire-workers INVENTORY=... HOSTS=name[,name]
	@test -n "$(HOSTS)" || { echo "make retire-workers: set HOSTS=name[,name] (docs/operations.md, \"Scaling the workers\")" >&2; exit 2; }
	$(BIN)/ansible-playbook -i $(INVENTORY) -e retire_hosts=$(HOSTS) playbooks/retire-workers.yml $(DEPLOY_ARGS)

# The Debian version of redis-server, redis-tools and redis-sentinel for make upgrade-redis
# (`apt-cache policy redis-server` on a data node). docs/operations.md, "Upgrading Redis".
VERSION ?=

upgrade-redis: setup ## Move the Redis packages to redis_package_version (inventory), or VERSION for this run (then put it in the inventory too, or the next deploy moves back), restarting one node at a time: make upgrade-redis INVENTORY=... [VERSION=5:7.0.15-1~deb12u10]
	$(BIN)/ansible-playbook -i $(INVENTORY) $(if $(VERSION),-e 'redis_package_version=$(VERSION)') playbooks/redis.yml $(DEPLOY_ARGS)

backup: setup ## Verified Redis snapshot now on the data nodes (as the backup timer does): make backup INVENTORY=...
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/backup.yml $(DEPLOY_ARGS)

# The step of a CA rollover: begin, switch, finish (docs/operations.md, "Rolling the CA over").
# Role pki checks it (tasks_from: rollover) before anything changes.
STEP ?=

# The snapshot to restore (an RDB file on this machine) and the data node that becomes the
# primary (default: redis_primary). docs/operations.md, "Backing up and restoring the broker".
SNAPSHOT ?=
RESTORE_PRIMARY ?=

restore: setup ## Restore Redis from a snapshot onto a new primary, re-form replicas and Sentinels: make restore INVENTORY=... SNAPSHOT=path [RESTORE_PRIMARY=host]
	@test -n "$(SNAPSHOT)" || { echo "make restore: set SNAPSHOT=path/to/snapshot.rdb (docs/operations.md, \"Backing up and restoring the broker\")" >&2; exit 2; }
	$(BIN)/ansible-playbook -i $(INVENTORY) -e redis_restore_snapshot=$(abspath $(SNAPSHOT)) \
	  $(if $(RESTORE_PRIMARY),-e redis_restore_primary=$(RESTORE_PRIMARY)) playbooks/restore.yml $(DEPLOY_ARGS)

ca-rollover: setup wheelhouse ## Roll the CA over, one step a run (begin, switch, finish), converging every host: make ca-rollover INVENTORY=... STEP=begin
	$(BIN)/ansible-playbook -i $(INVENTORY) -e fleet_wheelhouse=$(abspath $(WHEELHOUSE)) -e pki_rollover_step=$(STEP) \
	  playbooks/ca-rollover.yml $(DEPLOY_ARGS)

verify: setup ## Check a deployment (celery-fleet doctor on the hosts): make verify INVENTORY=...
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/verify.yml $(DEPLOY_ARGS)

test-molecule-fleet: setup molecule-image wheelhouse ## Molecule: 3 nodes, site.yml, tasks across hosts, kill -9, warm stop, beat lock across a beat host kill, Flower auth, doctor
	cd $(CURDIR) && $(BIN)/molecule -c molecule/base.yml test -s fleet

TEST_SYSTEMD_TARGETS += test-molecule-fleet
