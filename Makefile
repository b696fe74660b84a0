# pg_integration — every target installs what it needs, quietly when present.
#   make run      build, install and start PostgreSQL + the sidecar locally
#   make test     install what is missing and run every test
#   make install  install the extension (release build) into the PostgreSQL of pg_config
#   make bench    run the benchmarks in tests/bench (BENCH="http webhooks" for some)

SHELL        := /bin/bash
PG_CONFIG    ?= /usr/bin/pg_config
PGRX_VERSION := 0.16.1
BUILD        := $(CURDIR)/build
# Outside the checkout: the postgres OS user must be able to reach it.
PGRX_PGDATA  := $(or $(TMPDIR),/tmp)/pg_integration-pgrx-$(shell id -u)
CARGO        ?= cargo
APT_PACKAGES := postgresql-15 postgresql-server-dev-15 libclang-dev clang pkg-config \
                libssl-dev sudo openssl python3-venv mariadb-server
# SAML logins (samael's xmlsec): headers to build the sidecar, libraries it links.
APT_PACKAGES += libxmlsec1-dev libxml2-dev libxmlsec1 libxmlsec1-openssl libxml2
SUDO         := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: deps apt-deps sso-apt-deps pgrx-deps test-deps bench-deps install install-debug test test-unit \
        test-pgrx test-e2e bench run sidecar lint release-sql

deps: apt-deps pgrx-deps

# Test peers: from PyPI (httpbin under gunicorn) in a virtualenv of ours,
# from Debian (slapd) and from npm (oidc-provider).
VENV := $(BUILD)/venv
OIDC := $(BUILD)/oidc
CAS  := $(BUILD)/cas
SAML := $(BUILD)/saml
BROWSER := $(BUILD)/browser
FUZZ := $(BUILD)/schemathesis
test-deps: $(VENV)/.installed $(VENV)/.openapi-validator $(VENV)/.pyjwt sso-apt-deps \
           $(OIDC)/node_modules/.installed $(CAS)/.installed $(SAML)/.installed \
           $(BROWSER)/node_modules/.installed $(FUZZ)/.installed
$(VENV)/.installed: | apt-deps
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check httpbin==0.10.4 gunicorn
	touch $@

# Checks /openapi.json (tests/openapi.rs); its own stamp, so an existing
# virtualenv gets it too.
$(VENV)/.openapi-validator: | $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check openapi-spec-validator==0.9.0
	touch $@

# schemathesis fuzzes the sidecar from its /openapi.json (tests/openapi.rs),
# in a virtualenv of its own so its pins never meet httpbin's.
$(FUZZ)/.installed: | apt-deps
	python3 -m venv $(FUZZ)
	$(FUZZ)/bin/pip install --quiet --disable-pip-version-check schemathesis==4.32.5
	touch $@

# An independent JWT verifier (tests/verifiers/pyjwt_verify.py, run by
# tests/independent_verifiers.rs): PyJWT with cryptography for EdDSA.
$(VENV)/.pyjwt: | $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check PyJWT==2.15.1 cryptography==51.0.1
	touch $@

# The CAS server of the tests (django-cas-server on Django 5.2), in its own
# virtualenv: tests/src/cas_server.rs gives each run its settings and SQLite file.
$(CAS)/.installed: | apt-deps
	python3 -m venv $(CAS)
	$(CAS)/bin/pip install --quiet --disable-pip-version-check 'django>=5.2,<5.3' django-cas-server==3.1.0
	touch $@

# The SAML IdP of the tests (pysaml2, signing with Debian's xmlsec1), in its
# own virtualenv: tests/src/saml_idp.rs runs tests/saml/idp.py from here.
$(SAML)/.installed: | sso-apt-deps
	python3 -m venv $(SAML)
	$(SAML)/bin/pip install --quiet --disable-pip-version-check pysaml2==7.5.5
	touch $@

# $(call apt_install,PACKAGES) installs those missing, silently when none is.
apt_install = missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

apt-deps:
	@$(call apt_install,$(APT_PACKAGES))

# The SSO peers: slapd preseeded so that no system instance is configured
# (the tests run throwaway instances of their own), and Node for oidc-provider.
# xmlsec1 signs the SAML responses of tests/src/saml_signer.rs (and pysaml2's).
SSO_APT_PACKAGES := slapd ldap-utils nodejs xmlsec1
sso-apt-deps: apt-deps
	@echo "slapd slapd/no_configuration boolean true" | $(SUDO) debconf-set-selections
	@$(call apt_install,$(SSO_APT_PACKAGES))
	@command -v npm >/dev/null || { $(call apt_install,npm); }

# The OpenID provider of the tests (npm oidc-provider), at the versions of
# the committed lock file; tests/src/oidc_provider.rs runs it from here.
$(OIDC)/node_modules/.installed: tests/oidc/package.json tests/oidc/package-lock.json | sso-apt-deps
	@mkdir -p $(OIDC) && cp tests/oidc/package.json tests/oidc/package-lock.json $(OIDC)/
	cd $(OIDC) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Headless Chromium for the browser tests (Debian's, never a download),
# driven by npm playwright-core at the versions of the committed lock file;
# tests/src/chromium.rs runs our scripts from here.
$(BROWSER)/node_modules/.installed: tests/browser/package.json tests/browser/package-lock.json | sso-apt-deps
	@$(call apt_install,chromium)
	@mkdir -p $(BROWSER) && cp tests/browser/package.json tests/browser/package-lock.json $(BROWSER)/
	cd $(BROWSER) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

pgrx-deps: apt-deps
	@if ! cargo pgrx --version 2>/dev/null | grep -q "$(PGRX_VERSION)"; then \
	  echo "installing cargo-pgrx $(PGRX_VERSION)"; \
	  $(CARGO) install cargo-pgrx --version $(PGRX_VERSION) --locked --quiet; \
	fi
	@if ! grep -qs '^pg15 *= *"$(PG_CONFIG)"' $${PGRX_HOME:-$$HOME/.pgrx}/config.toml; then \
	  $(CARGO) pgrx init --pg15=$(PG_CONFIG) >/dev/null; \
	fi

# Installs the debug build (what the end-to-end tests load).
# The release build: what a DBA installs, and what `make run` and `make bench` use.
install: deps
	cd extension && $(CARGO) pgrx install --release --pg-config $(PG_CONFIG) $(if $(SUDO),--sudo) >/dev/null

# The debug build (debug assertions, faster to build): what the end-to-end tests load.
install-debug: deps
	cd extension && $(CARGO) pgrx install --pg-config $(PG_CONFIG) $(if $(SUDO),--sudo) >/dev/null

sidecar: apt-deps
	$(CARGO) build -p integration-sidecar

test: deps test-unit test-pgrx test-e2e

test-unit: apt-deps
	$(CARGO) test -p integration-core -p integration-sidecar

# pgrx runs its own cluster as the postgres OS user; it does not clear an
# old one, so start from an empty folder every time.
test-pgrx: deps
	@mkdir -p $(PGRX_PGDATA) && rm -rf $(PGRX_PGDATA)/15 && \
	  if [ "$$(id -u)" = 0 ]; then chown -R postgres:postgres $(PGRX_PGDATA); fi
	cd extension && $(CARGO) pgrx test pg15 $(if $(filter 0,$(shell id -u)),--runas postgres) \
	  --pgdata $(PGRX_PGDATA)

# The install scripts of the releases in sql/releases, for the upgrade test
# (tests/upgrade.rs): built once from their commits, cached under build/releases.
release-sql: pgrx-deps
	@bash scripts/release-sql.sh $(BUILD)/releases $(PG_CONFIG)

# `cargo pgrx test` installed its test build; install the debug one after it.
test-e2e: install-debug sidecar test-deps release-sql
	$(CARGO) test -p integration-tests

BENCH_PACKAGES := wrk nginx-light postgresql-15-mysql-fdw
bench-deps: apt-deps
	@$(call apt_install,$(BENCH_PACKAGES))

# The webhook figures need the release sidecar, wrk and pgbench (postgresql-15);
# the HTTP figures need nginx; the fdw figures mysql_fdw (postgres_fdw is in
# postgresql-15) and MariaDB.
bench: install bench-deps
	$(CARGO) build --release -p integration-sidecar
	$(CARGO) run --release -p integration-tests --bin bench -- $(BENCH)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

run: install
	$(CARGO) build --release -p integration-sidecar
	@BUILD=$(BUILD) PG_CONFIG=$(PG_CONFIG) bash scripts/run-local.sh
