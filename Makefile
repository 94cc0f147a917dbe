# projector — every command a developer needs. `make` (or `make help`) lists them.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO            ?= go
STACK         := scripts/stack.sh
CACHE_DIR     ?= $(HOME)/.cache/projector
GOLANGCI_VER  := v2.15.0
GOLANGCI      := $(CACHE_DIR)/bin/golangci-lint-$(GOLANGCI_VER)
# Every command that talks to the stack reads its endpoints from the stack's env file.
WITH_STACK    := eval "$$($(STACK) env)" &&

.PHONY: help demo test test-short lint bench bench-go chaos chaos-short stack-up stack-down stack-status build docker-check

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

stack-up: ## install (first time) and start Kafka, Redis, PostgreSQL and Mailpit on loopback
	@$(STACK) up

stack-down: ## stop exactly the stack processes stack-up started
	@$(STACK) down

stack-status: ## show which stack servers run, and their endpoints
	@$(STACK) status

build: ## build bin/projector and bin/producer
	$(GO) build -o bin/ ./cmd/...

demo: stack-up build ## the main job: the founding article's story in ten checked steps on the local stack
	@$(WITH_STACK) scripts/demo.sh

test: stack-up ## start the stack if needed, then go test -race ./... against it
	@$(WITH_STACK) PROJECTOR_REQUIRE_STACK=1 $(GO) test -race -count=1 -timeout 30m ./...

test-short: ## unit tests only: no stack needed (tests that need it skip)
	$(GO) test -race -short -count=1 ./...

$(GOLANGCI):
	@mkdir -p $(CACHE_DIR)/bin
	GOBIN=$(CACHE_DIR)/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VER)
	@mv $(CACHE_DIR)/bin/golangci-lint $(GOLANGCI)

lint: $(GOLANGCI) ## gofmt check, go vet, golangci-lint (pinned) with .golangci.yml, the docs' relative links, the tutorial's code blocks against examples/orders
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GOLANGCI) run ./...
	bash -n $(STACK) scripts/*.sh .ci/run
	$(GO) test -count=1 -run 'TestDocsLinksResolve|TestTutorialExcerptsAreTheExamplesSource' ./internal/doclinks/

bench: stack-up ## the benchmark program: replay, bootstrap, live latency, effects, each beside its baseline; writes bench/results/
	@$(WITH_STACK) $(GO) run ./cmd/bench $(BENCH_FLAGS)

bench-go: stack-up ## the Go benchmarks (encode/decode, generator, replay, effects, personal data) against the real stack
	@$(GO) test -run '^$$' -bench . -count 1 ./pkg/events/ ./internal/domain/
	@$(WITH_STACK) $(GO) test -run '^$$' -bench . -benchtime 3x -count 1 ./pkg/projector/

# The reliability suite starts its own private servers (never the shared stack's);
# stack-up is only there to install what it runs (Kafka's jars, Mailpit, PostgreSQL).
# It needs root: network namespaces, a tmpfs, PostgreSQL run as its own user.
CHAOS_FLAGS := $(if $(SEED),--seed $(SEED)) $(if $(ONLY),--only $(ONLY))

chaos: stack-up ## the reliability suite, full profile (~12 min, root): SEED=N to replay, ONLY=1,4 to pick scenarios
	$(GO) run ./cmd/chaos --profile full $(CHAOS_FLAGS)

chaos-short: stack-up ## the reliability suite's short profile, as CI runs it (~5 min): SEED=, ONLY= as for chaos
	$(GO) run ./cmd/chaos --profile short $(CHAOS_FLAGS)
