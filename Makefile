# moonbeat: plain make, outputs in build/ (build/asan/ for `make check`).
PKGS   = lua5.4 libuv sqlite3
WARN   = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
         -Wwrite-strings -Wundef -Werror
# Recursively expanded, so pkg-config runs after `deps` installed it.
CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g -O2 $(WARN) \
         -iquote host $(shell pkg-config --cflags $(PKGS))
LDLIBS = $(shell pkg-config --libs $(PKGS)) -lm
BUILD  = build

ifeq ($(SANITIZE),1)
BUILD   = build/asan
CFLAGS += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
          -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
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

clean:
	rm -rf build
