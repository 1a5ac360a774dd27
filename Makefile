# moonbeat: plain make, outputs in build/ (build/asan/ for `make check`,
# build/tsan/ for `make tsan`).
PKGS   = lua5.4 libuv sqlite3
WARN   = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
         -Wwrite-strings -Wundef -Werror
# Recursively expanded, so pkg-config runs after `deps` installed it.
CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g -O2 $(WARN) \
         -iquote host $(shell pkg-config --cflags $(PKGS) libcurl)
# readline (the REPL's line editing) only links: its pkg-config cflags
# would lower _POSIX_C_SOURCE for every file.
LDLIBS = $(shell pkg-config --libs $(PKGS) readline) -lm
BUILD  = build

ifeq ($(SANITIZE),1)
BUILD   = build/asan
CFLAGS += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
          -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
ifeq ($(SANITIZE),thread)
BUILD   = build/tsan
CFLAGS += -O1 -fsanitize=thread -fno-omit-frame-pointer
LDFLAGS += -fsanitize=thread
endif

# Lua's heap on mimalloc (host/lua_api.c's allocator): Lua's blocks are
# most of what adding a job or running one allocates, and glibc's malloc
# and free were an eighth of an add. Not under a sanitizer, which must see
# every block. Debian's libmimalloc also defines malloc and free: linked
# after libc, it serves only the mi_ calls, and the rest of the process
# keeps glibc's (tuned in host/main.c).
ifeq ($(SANITIZE),)
CFLAGS += -DMB_LUA_MIMALLOC
LDLIBS += -lc -lmimalloc
endif

SRCS     = $(wildcard host/*.c)
OBJS     = $(SRCS:host/%.c=$(BUILD)/%.o) $(BUILD)/embedded.o
LUA_SRCS = $(sort $(wildcard lua/*.lua)) $(sort $(wildcard stdlib/*.lua))
BIN      = $(BUILD)/moonbeat
# The specs, run by busted inside the moonbeat binary (tests/run.lua).
TEST_CMD = $(BIN) lua tests/run.lua $(TESTFLAGS)

.PHONY: all deps run test check clean
all: $(BIN)

deps:
	@./scripts/deps.sh

$(BUILD):
	@mkdir -p $(BUILD)

$(BUILD)/%.o: host/%.c $(wildcard host/*.h) | $(BUILD)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/embed: tools/embed.c | $(BUILD)
	$(CC) -std=c11 -O2 -Wall -Wextra -Werror -o $@ $<

$(BUILD)/embedded.c: $(BUILD)/embed $(LUA_SRCS)
	$(BUILD)/embed $@ $(LUA_SRCS)

$(BUILD)/embedded.o: $(BUILD)/embedded.c host/embedded.h
	$(CC) $(CFLAGS) -c -o $@ $<

$(BIN): $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $(OBJS) $(LDLIBS)

run: deps
	@$(MAKE) --no-print-directory all
	$(BIN) run jobs/

test: deps
	@$(MAKE) --no-print-directory all
	$(TEST_CMD)

# The same specs inside the ASan+UBSan build.
check: deps
	@$(MAKE) --no-print-directory SANITIZE=1 all
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	MOONBEAT_BIN=build/asan/moonbeat \
	$(MAKE) --no-print-directory SANITIZE=1 test-only

.PHONY: test-only
test-only:
	$(TEST_CMD)

# The specs where threads meet (the store's writer thread, the job pool's
# populator, libuv's thread pool under fs, exec, http and sqlite) inside
# a ThreadSanitizer build: a data race fails the run. Not every spec:
# ThreadSanitizer holds a signal back until its thread calls into libc,
# so a REPL's Ctrl-C never reaches a busy Lua loop in that build.
TSAN_SPECS = $(addprefix tests/,store_spec.lua store_process_spec.lua \
             sqlite_spec.lua fs_spec.lua exec_spec.lua http_spec.lua \
             management_spec.lua shutdown_spec.lua restore_spec.lua)
.PHONY: tsan
tsan: deps
	@$(MAKE) --no-print-directory SANITIZE=thread all
	TSAN_OPTIONS=halt_on_error=1 MOONBEAT_BIN=build/tsan/moonbeat \
	build/tsan/moonbeat lua tests/run.lua $(TSAN_SPECS)

clean:
	rm -rf build

# ---- fuzzing and benchmarks ---------------------------------------------
# Kept apart from the build above: own flags, own outputs under build/fuzz
# and build/bench, and nothing above depends on them. Both need only the
# plain-C modules.
HOST_CORE = host/common.c host/tz.c host/cron.c host/share.c

# `make fuzz`: libFuzzer targets for cron (fuzz/cron_fuzz.c) and for the
# TZif reader and time parser (fuzz/tz_fuzz.c), each run FUZZ_SECONDS.
# A crash, a sanitizer report or a failed check fails the run and leaves
# the input in build/fuzz/<target>-crash-*. UBSan is told not to recover:
# otherwise its reports scroll past and the run still passes. The working
# corpus lives in build/fuzz/corpus (libFuzzer adds to it); fuzz/corpus
# holds the committed seeds, and real zone files join at run time. TMPDIR
# points into build/fuzz so that tz_fuzz's zone directory, left behind
# when a run crashes, goes with `make clean`.
FUZZ_SECONDS ?= 60
FUZZ_DIR      = build/fuzz
FUZZ_TARGETS  = cron tz
FUZZ_CFLAGS   = -g -O1 -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined -std=c11 \
                -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -iquote host \
                $(shell pkg-config --cflags libuv)
FUZZ_LDLIBS   = $(shell pkg-config --libs libuv)
FUZZ_ZONES    = Europe/Berlin America/New_York Asia/Kolkata
ZONEINFO     ?= $(or $(TZDIR),/usr/share/zoneinfo)

.PHONY: fuzz fuzz-deps fuzz-build
fuzz-deps:
	@./scripts/fuzz-deps.sh

# tz_fuzz keeps each zone it loads (tz.c caches them). libFuzzer takes
# that for a leak and scans the whole heap after each input, until it
# gives up after 1000 of them, most of a minute's run; the leak check at
# exit still runs.
FUZZ_FLAGS_tz = -detect_leaks=0

fuzz: deps fuzz-deps
	@$(MAKE) --no-print-directory fuzz-build
	@$(MAKE) --no-print-directory $(FUZZ_TARGETS:%=fuzz-run-%)

fuzz-run-%: $(FUZZ_DIR)/%_fuzz
	@mkdir -p $(FUZZ_DIR)/tmp $(FUZZ_DIR)/corpus/$*
	@if [ $* = tz ]; then for z in $(FUZZ_ZONES); do \
	  cp $(ZONEINFO)/$$z $(FUZZ_DIR)/corpus/tz/zone-$$(echo $$z | tr / -); \
	done; fi
	@echo "fuzz: $* for $(FUZZ_SECONDS) s, log in $(FUZZ_DIR)/$*.log"
	@TMPDIR=$(CURDIR)/$(FUZZ_DIR)/tmp \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(FUZZ_DIR)/$*_fuzz -max_total_time=$(FUZZ_SECONDS) -timeout=30 \
	  -dict=fuzz/$*.dict -artifact_prefix=$(FUZZ_DIR)/$*- \
	  -print_final_stats=1 $(FUZZ_FLAGS_$*) \
	  $(FUZZ_DIR)/corpus/$* fuzz/corpus/$* >$(FUZZ_DIR)/$*.log 2>&1 || { \
	    tail -n 60 $(FUZZ_DIR)/$*.log; \
	    echo "fuzz: $* FAILED; the input is in $(FUZZ_DIR)/$*-*" >&2; \
	    exit 1; }
	@grep -E '^#[0-9]+[[:space:]]+DONE|^stat::number_of_executed_units' \
	  $(FUZZ_DIR)/$*.log

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%_fuzz)

$(FUZZ_DIR):
	@mkdir -p $@

$(FUZZ_DIR)/%_fuzz: fuzz/%_fuzz.c fuzz/fuzz_util.h $(HOST_CORE) $(wildcard host/*.h) \
                    | $(FUZZ_DIR)
	clang $(FUZZ_CFLAGS) -iquote fuzz -o $@ $< $(HOST_CORE) $(FUZZ_LDLIBS)

# `make bench`: moonbeat against APScheduler 3 on the workloads of
# BENCHMARKS.md (bench/bench.lua drives bench/mb_bench.lua and
# bench/aps_bench.py) and cron next-fire evaluations (bench/cron_bench.c),
# written into BENCHMARKS.md. It builds its own -O2 moonbeat under
# build/bench, whatever SANITIZE says. QUICK=1: smaller workloads and one
# round, under 2 minutes (PROFILE=1 adds the profiles a full run takes);
# the full run stays under 10.
BENCH_DIR    = build/bench
BENCH_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -O2 \
               $(WARN) -iquote host $(shell pkg-config --cflags libuv)

.PHONY: bench bench-build
bench: deps
	@./scripts/deps.sh tzdata linux-perf
	@$(MAKE) --no-print-directory bench-build
	CC="$(CC)" $(BENCH_DIR)/moonbeat lua bench/bench.lua $(if $(QUICK),--quick) \
	  $(if $(PROFILE),--profiles) \
	  --command "make bench$(if $(QUICK), QUICK=1)$(if $(PROFILE), PROFILE=1)"

bench-build:
	@$(MAKE) --no-print-directory SANITIZE= BUILD=$(BENCH_DIR)/obj \
	  $(BENCH_DIR)/obj/moonbeat
	@cp $(BENCH_DIR)/obj/moonbeat $(BENCH_DIR)/moonbeat
	@$(MAKE) --no-print-directory $(BENCH_DIR)/cron_bench $(BENCH_DIR)/wake_floor

$(BENCH_DIR):
	@mkdir -p $@

$(BENCH_DIR)/wake_floor: bench/wake_floor.c | $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -o $@ $<

$(BENCH_DIR)/cron_bench: bench/cron_bench.c $(HOST_CORE) $(wildcard host/*.h) \
                         | $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -o $@ $< $(HOST_CORE) $(shell pkg-config --libs libuv)
