# One non-recursive Makefile for the whole tree.
#
#   make            build both services and the local launcher
#   make test       install what is missing, start PostgreSQL + Kafka, run every test
#   make test-asan  the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-deploy  the image of deploy/Dockerfile built and run with podman (the services, the
#                   compose stack, the k8s manifests by kube play), commands end to end
#   make run        the whole system on the embedded default (private PostgreSQL, mock Kafka);
#                   make run KAFKA=real runs it on Apache Kafka fetched from Maven Central
#   make bench      the pipeline against baselines on this machine (tests/bench/bench.sh);
#                   results in $(BUILD)/bench/results.md
#   make soak       the fault-injection checker (tests/e2e/test_checker.c) for SOAK_MINUTES
#                   (default 30) on a 3-node Apache Kafka cluster; CQRS_CHECKER_SEED replays a seed
#   make fuzz       the libFuzzer harnesses of tests/fuzz, FUZZ_SECONDS each (default 60)
#   make lint       the module table of docs/architecture.md, clang-format (check), cppcheck, clang-tidy
#   make deps       install the Debian packages the build and the tests need

BUILD    ?= build
ifeq ($(origin CC),default)
CC       := gcc
endif
PKGS     := rdkafka libevent jansson libpq uuid libpcre2-8 libjwt libcrypto
OPT      ?= -O2
SAN      ?=
CPPFLAGS += -D_GNU_SOURCE -Icommon
CFLAGS   += -std=c11 $(OPT) -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
            -Wmissing-prototypes -Wformat=2 -Wno-format-nonliteral -Wvla -fno-common $(SAN)
LDFLAGS  += $(SAN)
DEPFLAGS  = -MMD -MP

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -levent_pthreads -lpthread -lm
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null)

# Sources sit in folders by concept (docs/architecture.md); includes name the folder
# ("kafka/kafka.h", "loop/txloop.h") from the roots common/ and state-processor/.
COMMON_SRC  := $(sort $(wildcard common/*/*.c))
GATEWAY_SRC := $(sort $(wildcard command-gateway/*.c))
PROC_SRC    := $(sort $(wildcard state-processor/*.c state-processor/*/*.c state-processor/*/*/*.c))
UNIT_SRC    := $(sort $(wildcard tests/unit/test_*.c))
INTEG_SRC   := $(sort $(wildcard tests/integration/test_*.c))
E2E_SRC     := $(sort $(wildcard tests/e2e/test_*.c))
SUPPORT_SRC := $(sort $(wildcard tests/support/*.c))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIBCOMMON := $(BUILD)/libcommon.a
GATEWAY   := $(BUILD)/command-gateway
PROCESSOR := $(BUILD)/state-processor
MOCKKAFKA := $(BUILD)/mock-kafka
# Service sources minus main.c, so tests can link a service's modules.
GATEWAY_LIB := $(BUILD)/libgateway.a
PROC_LIB    := $(BUILD)/libprocessor.a
TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(UNIT_SRC) $(INTEG_SRC) $(E2E_SRC))
BENCH_BINS := $(BUILD)/bench/bare202 $(BUILD)/bench/fill $(BUILD)/bench/openloop $(BUILD)/bench/floor
# libFuzzer harnesses: clang (Debian's clang-14), each with the sources it reaches.
FUZZ_CC    ?= clang-14
FUZZ_FLAGS := -std=c11 -g -O1 -Wall -Wextra -Werror -fno-omit-frame-pointer \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZERS    := $(BUILD)/fuzz/fuzz_intake $(BUILD)/fuzz/fuzz_decode $(BUILD)/fuzz/fuzz_httpd

.PHONY: all deps test test-asan test-deploy soak run bench fuzz lint format clean
all: $(GATEWAY) $(PROCESSOR) $(MOCKKAFKA)

# Tests reach into the services' headers; each service sees common/ and its own tree.
$(BUILD)/obj/state-processor/%.o: CPPFLAGS += -Istate-processor
$(BUILD)/obj/tests/%.o: CPPFLAGS += -Icommand-gateway -Istate-processor -Itests/support
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(PKG_CFLAGS) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(LIBCOMMON): $(call obj,$(COMMON_SRC))
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^
$(GATEWAY_LIB): $(call obj,$(filter-out %/main.c,$(GATEWAY_SRC)))
	$(AR) rcs $@ $^
$(PROC_LIB): $(call obj,$(filter-out %/main.c,$(PROC_SRC)))
	$(AR) rcs $@ $^

$(GATEWAY): $(call obj,command-gateway/main.c) $(GATEWAY_LIB) $(LIBCOMMON)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) -o $@
$(PROCESSOR): $(call obj,state-processor/main.c) $(PROC_LIB) $(LIBCOMMON)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) -o $@
$(MOCKKAFKA): $(call obj,deploy/local/mock_kafka.c) $(LIBCOMMON)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) -o $@

$(BUILD)/bench/%: $(BUILD)/obj/tests/bench/%.o $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) -o $@

# A unit test links the common modules and the service modules it tests (UNIT_MODULES_<test>);
# integration and e2e tests link the services whole.
UNIT_MODULES_test_auth       := command-gateway/auth.c
UNIT_MODULES_test_batch      := state-processor/processor/batch.c
UNIT_MODULES_test_cmdcopy    := state-processor/ops/cmdcopy.c
UNIT_MODULES_test_deadletter := state-processor/ops/deadletter.c state-processor/ops/cmdcopy.c
UNIT_MODULES_test_intake     := command-gateway/intake.c
UNIT_MODULES_test_kafka      := tests/support/waitfor.c
UNIT_MODULES_test_opsout     := state-processor/ops/opsout.c
UNIT_MODULES_test_progress   := state-processor/ops/progress.c
UNIT_MODULES_test_projbatch  := state-processor/projector/projbatch.c
UNIT_MODULES_test_ratelimit  := command-gateway/ratelimit.c
UNIT_MODULES_test_retryafter := command-gateway/retryafter.c
UNIT_MODULES_test_sizelimits := command-gateway/sizelimits.c
.SECONDEXPANSION:
$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $$(call obj,$$(UNIT_MODULES_$$*)) \
                       $(call obj,tests/support/checkrun.c) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) $(CHECK_LIBS) -o $@
$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(call obj,$(SUPPORT_SRC)) $(GATEWAY_LIB) $(PROC_LIB) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) $(CHECK_LIBS) -o $@

deps:
	@deploy/install-deps.sh

test: deps
	@$(MAKE) --no-print-directory all tests
	@BUILD=$(BUILD) tests/run.sh

# The deploy files run: the image of deploy/Dockerfile built with podman (its base made from
# Debian's packages), the services run from it, commands end to end (tests/deploy/containers.sh).
test-deploy:
	@BUILD=$(BUILD) tests/deploy/containers.sh

tests: $(TESTS) $(BENCH_BINS) $(FUZZERS)

FUZZ_DEPS := tests/fuzz/fuzz_domains.h $(wildcard common/*/*.h)
$(BUILD)/fuzz/fuzz_intake: tests/fuzz/fuzz_intake.c command-gateway/intake.c $(COMMON_SRC) \
                           $(FUZZ_DEPS) command-gateway/intake.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) -Icommand-gateway $(PKG_CFLAGS) $(FUZZ_FLAGS) $(filter %.c,$^) \
	    $(PKG_LIBS) -o $@
$(BUILD)/fuzz/fuzz_decode: tests/fuzz/fuzz_decode.c state-processor/processor/batch.c \
                           $(COMMON_SRC) $(FUZZ_DEPS) state-processor/processor/batch.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) -Istate-processor $(PKG_CFLAGS) $(FUZZ_FLAGS) $(filter %.c,$^) \
	    $(PKG_LIBS) -o $@
$(BUILD)/fuzz/fuzz_httpd: tests/fuzz/fuzz_httpd.c $(COMMON_SRC) $(FUZZ_DEPS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(PKG_CFLAGS) $(FUZZ_FLAGS) $(filter %.c,$^) $(PKG_LIBS) -o $@

FUZZ_SECONDS ?= 60
fuzz: deps
	@$(MAKE) --no-print-directory $(FUZZERS)
	@BUILD=$(BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh

test-asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" all tests
	@BUILD=build-asan ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 tests/run.sh

bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_BINS)
	@BUILD=$(BUILD) tests/bench/bench.sh

# The checker alone, SOAK_MINUTES of faults, on the 3-node cluster tests/run.sh starts (real3);
# SOAK_STANDBY=1 gives its PostgreSQL a synchronous standby, and its faults a failover to it.
SOAK_MINUTES ?= 30
SOAK_STANDBY ?= 0
soak: deps
	@$(MAKE) --no-print-directory all tests
	@BUILD=$(BUILD) TESTS=e2e/test_checker KAFKA_MODES=real3 FAILOVER_TESTS=e2e/test_checker \
	    $(if $(filter 1,$(SOAK_STANDBY)),STANDBY_PG_TESTS=e2e/test_checker) \
	    CQRS_CHECKER_SECONDS=$$(( $(SOAK_MINUTES) * 60 )) \
	    TEST_TIMEOUT=$$(( $(SOAK_MINUTES) * 60 + 1200 )) tests/run.sh

KAFKA ?= mock
run: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) KAFKA=$(KAFKA) deploy/local/run.sh

C_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
lint:
	tests/docs/check-architecture.sh
	clang-format --dry-run --Werror $(C_FILES)
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	    --inline-suppr --suppress=missingIncludeSystem -Icommon -Istate-processor $(C_FILES)
	clang-tidy --quiet $(filter %.c,$(C_FILES)) -- $(CPPFLAGS) -Icommand-gateway -Istate-processor \
	    -Itests/support $(PKG_CFLAGS) -std=c11

format:
	clang-format -i $(C_FILES)

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
