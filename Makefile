# Thin wrapper around CMake: every target installs missing Debian packages first, then builds.
BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
SOAK_SECONDS ?= 600
JOBS       ?= $(shell nproc)
CTEST_ARGS ?= --output-on-failure

.PHONY: all deps build test asan tsan demo bench image image-test fuzz soak clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@cd $(BUILD) && ctest $(CTEST_ARGS) -j $(JOBS)

asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSLUICE_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@cd $(ASAN_BUILD) && ctest $(CTEST_ARGS) -j $(JOBS)

# ThreadSanitizer over the tests that run Sluice's threads (unit, integration and the serve black-box tests; the
# serve processes they start are instrumented too, and a race makes them exit 66). Left out: the Lua budget's tests
# (lua_host, workflow) — the budget stops a C function with a timer's signal, and TSan delivers a signal only at
# an intercepted call, which a loop inside Lua's C library never makes — and the HTTP client's throughput test.
TSAN_TESTS ?= ^(unit|integration)\.|^blackbox\.test_serve_(flow|reload|identities|quota|max_runs|replicas)$$
TSAN_SKIP  ?= ^unit\.test_(lua_host|workflow|http_client)$$|firestore
tsan: deps
	@cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSLUICE_TSAN=ON >/dev/null
	@cmake --build $(TSAN_BUILD) -j $(JOBS)
	@cd $(TSAN_BUILD) && TSAN_OPTIONS="$${TSAN_OPTIONS:-second_deadlock_stack=1}" \
		ctest $(CTEST_ARGS) -j $(JOBS) -R '$(TSAN_TESTS)' -E '$(TSAN_SKIP)'

demo: build
	@scripts/demo.sh $(BUILD)/sluice

# The container image (Dockerfile) from a locally built Debian 12 base: scripts/image.sh.
IMAGE ?= localhost/sluice:dev
image:
	@scripts/deps.sh image
	@scripts/image.sh $(IMAGE)

# Builds the image and runs its serve against the emulator (kept out of ctest: it needs the image tools).
image-test: build
	@scripts/deps.sh image
	@SLUICE_BIN=$(CURDIR)/$(BUILD)/sluice SLUICE_SRC=$(CURDIR) bash tests/blackbox/test_image.sh

bench: build
	@bench/run.sh $(BUILD)

# libFuzzer (clang): the library instrumented with ASan + UBSan, each target run FUZZ_SECONDS; fails on a crash.
fuzz: deps
	@scripts/deps.sh --fuzz
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLUICE_FUZZ=ON -DCMAKE_C_COMPILER=clang >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)
	@FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh $(FUZZ_BUILD)

# SOAK_SECONDS of steady events, runs, cancels and reloads against `sluice serve` and the emulator.
soak: build
	@SOAK_SECONDS=$(SOAK_SECONDS) bench/soak.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
