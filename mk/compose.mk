# Local stack: the whole secured stack on this machine with Docker Compose (docs/compose.md).
# `make up` renders the bundle (playbooks/local.yml), builds the images, starts the stack.

CF_PROJECT ?= celery-fleet
CF_BUNDLE_DIR ?= $(CURDIR)/compose/.bundle
# Your settings (see compose/.env.example); compose reads the same file.
-include compose/.env
CF_IMAGE_TAG ?= local
# MONITORING=1: also Prometheus, Alertmanager and the Redis exporter (compose profile
# `monitoring`, docs/monitoring.md); its image is built only then.
MONITORING ?=
ifneq ($(filter 1 yes true,$(MONITORING)),)
COMPOSE_PROFILES := monitoring
export COMPOSE_PROFILES
endif
export CF_PROJECT CF_BUNDLE_DIR CF_NET_PREFIX CF_FLOWER_BIND CF_FLOWER_PORT CF_WORKER_REPLICAS \
  CF_WORKER_CONCURRENCY DEMO_HEARTBEAT_SECONDS \
  CF_APP CF_APP_DIR CF_LOG_LEVEL CF_IMAGE_TAG CF_PROMETHEUS_PORT

COMPOSE := docker compose --project-directory compose -f compose/compose.yaml -p $(CF_PROJECT)
# Wheels for the app image, downloaded on the host for the engine's platform (the build
# itself needs no network). Always under compose/.bundle: the build context is the repo.
WHEELS := compose/.bundle/wheels

.PHONY: up scale down stop ps logs smoke images bundle test-e2e test-e2e-failover

$(WHEELS)/.done: requirements.txt pyproject.toml $(shell find src -name '*.py' 2>/dev/null) | $(VENV)/.done
	@echo "==> wheels for the app image ($(WHEELS))"
	@rm -rf $(WHEELS) && mkdir -p $(WHEELS)
	@arch=$$(docker version -f '{{.Server.Arch}}'); case "$$arch" in \
	  amd64) p=x86_64 ;; arm64) p=aarch64 ;; *) echo "unsupported engine arch $$arch" >&2; exit 1 ;; esac; \
	$(BIN)/pip download -q --disable-pip-version-check --only-binary=:all: --implementation cp \
	  --python-version 3.11 --platform manylinux2014_$$p --platform manylinux_2_17_$$p \
	  --platform manylinux_2_28_$$p -d $(WHEELS) -r requirements.txt \
	  async-timeout==5.0.1 2>&1 | { grep -v '^WARNING: Location' || true; }
	@# async-timeout: redis-py needs it on Debian's Python 3.11.2 (< 3.11.3), the host may not.
	@$(BIN)/pip wheel -q --disable-pip-version-check --no-deps -w $(WHEELS) . 2>&1 | { grep -v '^WARNING: Location' || true; }
	@touch $@

images: $(WHEELS)/.done ## Build the Redis and app images (cached)
	@echo "==> images celery-fleet-redis:$(CF_IMAGE_TAG), celery-fleet-app:$(CF_IMAGE_TAG)"
	@docker build -q -f compose/Dockerfile.redis -t celery-fleet-redis:$(CF_IMAGE_TAG) . 2>&1 | { grep -v -i -e 'deprecated' -e 'buildx' -e '^ *$$' || true; }
	@docker build -q -f compose/Dockerfile.app -t celery-fleet-app:$(CF_IMAGE_TAG) . 2>&1 | { grep -v -i -e 'deprecated' -e 'buildx' -e '^ *$$' || true; }
	$(if $(COMPOSE_PROFILES),@echo "==> image celery-fleet-monitoring:$(CF_IMAGE_TAG)")
	$(if $(COMPOSE_PROFILES),@docker build -q -f compose/Dockerfile.monitoring -t celery-fleet-monitoring:$(CF_IMAGE_TAG) . 2>&1 | { grep -v -i -e 'deprecated' -e 'buildx' -e '^ *$$' || true; })

bundle: setup ## Render certificates, passwords and config files into $(CF_BUNDLE_DIR)
	@echo "==> bundle $(CF_BUNDLE_DIR)"
	@$(BIN)/ansible-playbook -i localhost, -c local playbooks/local.yml \
	  -e cf_bundle_dir=$(CF_BUNDLE_DIR) $(if $(CF_NET_PREFIX),-e cf_net_prefix=$(CF_NET_PREFIX)) \
	  $(if $(CF_TASK_TIME_LIMIT),-e cf_task_time_limit=$(CF_TASK_TIME_LIMIT)) \
	  $(if $(CF_ALERT_WEBHOOK_URL),-e cf_alert_webhook_url=$(CF_ALERT_WEBHOOK_URL))

# `docker compose up` with CF_DIGEST_<service>: the hash of its bundle folder; a change
# recreates only its containers (and an unchanged bundle recreates nothing).
COMPOSE_UP = for d in $(CF_BUNDLE_DIR)/config/*/; do n=$$(basename $$d | tr - _); \
	  export CF_DIGEST_$$n=$$(cd $$d && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16); \
	  done; $(COMPOSE) up --detach --wait --wait-timeout 240 --remove-orphans

up: bundle images ## Start the secured stack (Redis, Sentinels, workers, beat, Flower; MONITORING=1: Prometheus too)
	@echo "==> docker compose up ($(CF_PROJECT))"
	@$(COMPOSE_UP)
	@bash compose/info.sh

WORKERS ?=

scale: ## Run WORKERS worker containers on the running stack: make scale WORKERS=4 (removed ones stop warm)
	@case "$(WORKERS)" in ''|*[!0-9]*|0) echo "make scale: set WORKERS to the number of worker containers, 1 or more (make scale WORKERS=4)" >&2; exit 2 ;; esac
	@test -d $(CF_BUNDLE_DIR)/config || { echo "make scale: no stack rendered in $(CF_BUNDLE_DIR); run make up first" >&2; exit 2; }
	@echo "==> $(WORKERS) worker container(s) ($(CF_PROJECT)); the next make up runs CF_WORKER_REPLICAS=$(or $(CF_WORKER_REPLICAS),2) again"
	@export CF_WORKER_REPLICAS=$(WORKERS); $(COMPOSE_UP)

stop: ## Stop the stack, keep its data
	@$(COMPOSE) --profile "*" stop

down: ## Remove the stack: containers, networks AND volumes (Redis data, beat schedule)
	@$(COMPOSE) --profile "*" down --volumes --remove-orphans --timeout 30

ps: ## Show the stack's containers and their health
	@$(COMPOSE) --profile "*" ps --all

logs: ## Show the stack's logs (LOGS_ARGS="-f worker" to follow one service)
	@$(COMPOSE) --profile "*" logs --tail 100 $(LOGS_ARGS)

smoke: ## Send demo tasks through the stack and print the results
	@echo "==> smoke: tasks sent from a worker container"
	@$(COMPOSE) exec -T worker app-start smoke
	@bash compose/info.sh flower

test-e2e: setup ## Compose end to end: up, hardening, secrets, smoke, beat, Flower, doctor, primary stopped under load, down
	$(BIN)/pytest -q -p no:cacheprovider tests/e2e

test-e2e-failover: setup ## Only the compose failover under load (with the stack it needs)
	$(BIN)/pytest -q -p no:cacheprovider tests/e2e -k "up_says or failover or down_leaves"

# Lane of `make test`: the process lane, after the integration tests and before molecule ha
# (the durations of both lanes: mk/molecule.mk).
TEST_TARGETS += test-e2e
