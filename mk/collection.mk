# The roles as the Ansible collection celery_fleet.fleet (galaxy.yml at the root):
# `make collection` writes build/collection/celery_fleet-fleet-VERSION.tar.gz;
# `ansible-galaxy collection install build/collection/celery_fleet-fleet-*.tar.gz` installs it.
COLLECTION_DIR ?= build/collection

.PHONY: collection

collection: setup ## Build the Ansible collection celery_fleet.fleet into build/collection/
	$(BIN)/ansible-galaxy collection build --force --output-path $(COLLECTION_DIR)
