/* repl.c: the terminal under the REPL. A terminal is driven by
 * readline's callback interface from a uv_poll on stdin, so the loop
 * goes on firing jobs while a line is typed; anything else on stdin is
 * read in plain lines. */
#define _GNU_SOURCE /* fopencookie */
#include "repl.h"

#include <errno.h>
#include <lauxlib.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <uv.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "common.h"
#include "log.h"
#include "lua_api.h"
#include "run.h"

/* How many lines of history the file and the session keep. */
#define HISTORY_LINES 1000
/* Key presses handled per wake-up, so that a long paste cannot keep
 * the loop from the jobs for long. */
#define KEYS_PER_WAKEUP 4096

/* Completion words are Lua names and dotted paths: every other
 * character ends one. Inside a string, readline starts the word after
 * the opening quote instead. */
static const char WORD_BREAKS[] =
    " \t\n\"'`~!@#$%^&*()-=+[{]}\\|;<>,/?";

typedef struct term {
  lua_State *L;            /* the main thread */
  uv_loop_t *loop;
  bool open;
  bool interactive;        /* stdin is a terminal: readline */
  bool interruptible;      /* Ctrl-C interrupts the code a line runs */
  int read_ref;            /* the function waiting for a line */
  int complete_ref;        /* (line, word) -> candidates */
  int interrupt_ref;       /* Ctrl-C: () -> new prompt or nil */
  char *prompt;
  char *history;           /* the history file, or NULL */
  bool prompt_due;         /* show the prompt on the next loop turn */
  bool prompting;          /* readline's handler is installed */
  bool hidden;             /* the prompt is cleared for output */
  /* stdin */
  uv_poll_t poll;
  bool pollable, polling;
  uv_idle_t idle;
  bool idling;
  uv_signal_t sigwinch, sigint;
  bool own_sigint;
  uv_timer_t timer;        /* term.after */
  int timer_ref;
  int handles_open;        /* closed handles whose callback is due */
  /* Plain lines, when stdin is not a terminal. */
  char *buf;
  size_t len, cap;
  bool eof;
  /* The log, drawn above the prompt while the terminal is open. */
  FILE *log_file;
  int log_format, log_level;
  bool log_on_tty;         /* else the prompt need not make way for it */
  /* Candidates of the completion under way. */
  char **matches;
  size_t nmatches, next_match;
} term;

static term T = {.read_ref = LUA_NOREF,
                 .complete_ref = LUA_NOREF,
                 .interrupt_ref = LUA_NOREF,
                 .timer_ref = LUA_NOREF};

/* ---- calling Lua ---- */

/* Call the function under nargs arguments; an error is reported, never
 * raised: the loop called us. */
static bool call_lua(int nargs, int nresults) {
  lua_State *L = T.L;
  mb_host_work_begin();
  int rc = lua_pcall(L, nargs, nresults, 0);
  mb_host_work_end();
  if (rc != LUA_OK) {
    fprintf(stderr, "moonbeat: repl: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return false;
  }
  return true;
}

/* Hand over the line waiting callback's ref: it is called once. */
static bool push_reader(void) {
  if (T.read_ref == LUA_NOREF) return false;
  lua_rawgeti(T.L, LUA_REGISTRYINDEX, T.read_ref);
  mb_unref(T.L, T.read_ref);
  T.read_ref = LUA_NOREF;
  return true;
}

/* ---- Ctrl-C while a line's code runs ---- */

/* While a line typed at the terminal runs, the terminal is in its usual
 * mode and Ctrl-C raises SIGINT; this handler stands in for the loop's
 * and stops the Lua code, as lua's own prompt does. */
static struct sigaction saved_sigint;
static lua_State *interrupt_L;

static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

static void on_eval_sigint(int signum) {
  (void)signum;
  lua_sethook(interrupt_L, stop_hook,
              LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void interruptible_begin(void) {
  if (!T.interruptible) return;
  interrupt_L = T.L;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_eval_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &saved_sigint);
}

static void interruptible_end(void) {
  if (!T.interruptible) return;
  sigaction(SIGINT, &saved_sigint, NULL);
  lua_sethook(T.L, NULL, 0, 0);
}

/* ---- output above the prompt ---- */

static void hide_prompt(void) {
  if (!T.prompting || T.hidden) return;
  rl_clear_visible_line();
  fflush(rl_outstream);
  T.hidden = true;
}

static void show_prompt(void) {
  if (!T.hidden) return;
  T.hidden = false;
  if (T.prompting) rl_forced_update_display();
}

/* The prompt comes back once a whole line is out. */
static void output(FILE *f, const char *text, size_t len) {
  hide_prompt();
  fwrite(text, 1, len, f);
  fflush(f);
  if (len && text[len - 1] == '\n') show_prompt();
}

static ssize_t log_write(void *cookie, const char *buf, size_t size) {
  (void)cookie;
  if (T.log_on_tty) {
    output(stderr, buf, size);
  } else {
    fwrite(buf, 1, size, stderr);
    fflush(stderr);
  }
  return (ssize_t)size;
}

/* log.c flushes after each line, so each line is one write here. */
static void capture_log(void) {
  T.log_on_tty = isatty(STDERR_FILENO);
  cookie_io_functions_t io = {.write = log_write};
  T.log_file = fopencookie(NULL, "w", io);
  if (!T.log_file) return;
  setvbuf(T.log_file, NULL, _IOFBF, 1 << 14);
  mb_log_configure(T.log_file, T.log_format, T.log_level);
}

static void release_log(void) {
  if (!T.log_file) return;
  mb_log_configure(stderr, T.log_format, T.log_level);
  fclose(T.log_file);
  T.log_file = NULL;
}

/* ---- readline ---- */

static void update_watchers(void);

/* readline's terminal mode, minus the interrupt character: Ctrl-C
 * reaches readline as a key (interrupt_key), in order with the others,
 * instead of a SIGINT that would stop the scheduler. Leaving the mode
 * restores the terminal as readline found it. */
static void prep_terminal(int meta) {
  rl_prep_terminal(meta);
  struct termios tio;
  if (tcgetattr(STDIN_FILENO, &tio) == 0) {
    tio.c_cc[VINTR] = _POSIX_VDISABLE;
    tcsetattr(STDIN_FILENO, TCSADRAIN, &tio);
  }
}

/* Drop the line being typed and start afresh on a new line. */
static void interrupt_line(void) {
  rl_point = rl_end;
  rl_redisplay();
  fputs("^C\n", rl_outstream);
  fflush(rl_outstream);
  rl_replace_line("", 1);
  using_history();
  if (T.interrupt_ref != LUA_NOREF) {
    lua_rawgeti(T.L, LUA_REGISTRYINDEX, T.interrupt_ref);
    if (call_lua(0, 1)) {
      if (lua_isstring(T.L, -1)) {
        free(T.prompt);
        T.prompt = mb_xstrdup(lua_tostring(T.L, -1));
        rl_set_prompt(T.prompt);
      }
      lua_pop(T.L, 1);
    }
  }
  rl_on_new_line();
}

static int interrupt_key(int count, int key) {
  (void)count;
  (void)key;
  interrupt_line();
  return 0;
}

static void on_line(char *line) {
  /* No new prompt until Lua asks for the next line. */
  rl_callback_handler_remove();
  T.prompting = false;
  if (push_reader()) {
    if (line)
      lua_pushstring(T.L, line);
    else
      lua_pushnil(T.L);
    interruptible_begin();
    call_lua(1, 0);
    interruptible_end();
  }
  free(line);
  update_watchers();
}

static char *next_match(const char *text, int state) {
  (void)text;
  if (state == 0) T.next_match = 0;
  if (T.next_match < T.nmatches) return mb_xstrdup(T.matches[T.next_match++]);
  return NULL;
}

static void free_matches(void) {
  for (size_t i = 0; i < T.nmatches; i++) free(T.matches[i]);
  free(T.matches);
  T.matches = NULL;
  T.nmatches = 0;
}

/* Lua names the candidates for the word before the cursor; readline
 * shows them or fills in what they share. Never file names. */
static char **on_complete(const char *text, int start, int end) {
  (void)start;
  rl_attempted_completion_over = 1;
  rl_completion_append_character = '\0';
  if (T.complete_ref == LUA_NOREF) return NULL;
  lua_State *L = T.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, T.complete_ref);
  lua_pushlstring(L, rl_line_buffer, (size_t)end);
  lua_pushstring(L, text);
  if (!call_lua(2, 1)) return NULL;
  if (lua_istable(L, -1)) {
    size_t n = (size_t)lua_rawlen(L, -1);
    T.matches = mb_xcalloc(n ? n : 1, sizeof *T.matches);
    for (size_t i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, (lua_Integer)i);
      if (lua_type(L, -1) == LUA_TSTRING)
        T.matches[T.nmatches++] = mb_xstrdup(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  char **list = T.nmatches ? rl_completion_matches(text, next_match) : NULL;
  free_matches();
  return list;
}

static char *no_entries(const char *text, int state) {
  (void)text;
  (void)state;
  return NULL;
}

static void setup_readline(void) {
  /* Multibyte input and display follow the user's locale. */
  setlocale(LC_CTYPE, "");
  rl_readline_name = "moonbeat";
  rl_catch_signals = 0;
  rl_catch_sigwinch = 0;
  rl_change_environment = 0;
  rl_attempted_completion_function = on_complete;
  rl_completion_entry_function = no_entries;
  rl_basic_word_break_characters = WORD_BREAKS;
  rl_completer_word_break_characters = WORD_BREAKS;
  rl_completer_quote_characters = "\"'";
  rl_prep_term_function = prep_terminal;
  /* Readline ends a bracketed paste at the end of input with a newline
   * of its own; the front end writes that newline. An inputrc may still
   * turn it on. */
  rl_variable_bind("enable-bracketed-paste", "off");
  /* A key that may start a longer sequence (Esc) waits for the next key
   * instead of a timed wait, which would hold up the loop. */
  rl_variable_bind("keyseq-timeout", "0");
  rl_initialize();
  rl_add_defun("moonbeat-interrupt", interrupt_key, 3);
  rl_bind_key_in_map(3, interrupt_key, vi_insertion_keymap);
  rl_bind_key_in_map(3, interrupt_key, vi_movement_keymap);
  using_history();
  stifle_history(HISTORY_LINES);
  if (T.history) read_history(T.history);
}

/* ---- stdin ---- */

static bool input_waiting(void) {
  struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
  return poll(&p, 1, 0) > 0 && p.revents;
}

static void read_some(void) {
  char chunk[16384];
  ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
  if (n > 0) {
    if (T.len + (size_t)n > T.cap) {
      T.cap = (T.len + (size_t)n) * 2;
      T.buf = mb_xrealloc(T.buf, T.cap);
    }
    memcpy(T.buf + T.len, chunk, (size_t)n);
    T.len += (size_t)n;
  } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
    T.eof = true;
  }
}

static bool line_ready(void) {
  return T.eof || (T.len && memchr(T.buf, '\n', T.len));
}

/* Hand complete lines to the reader, one per read() from Lua; nil once
 * the input has ended. */
static void deliver_lines(void) {
  while (T.open && T.read_ref != LUA_NOREF && line_ready()) {
    push_reader();
    char *nl = T.len ? memchr(T.buf, '\n', T.len) : NULL;
    size_t used = nl ? (size_t)(nl - T.buf) + 1 : T.len;
    size_t keep = nl ? used - 1 : used;
    if (keep && T.buf[keep - 1] == '\r') keep--;
    if (used)
      lua_pushlstring(T.L, T.buf, keep);
    else
      lua_pushnil(T.L);
    memmove(T.buf, T.buf + used, T.len - used);
    T.len -= used;
    call_lua(1, 0);
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  (void)p;
  (void)events;
  if (T.interactive) {
    /* A hang-up or error reads as the end of input. */
    for (int i = 0; i < KEYS_PER_WAKEUP && T.prompting; i++) {
      rl_callback_read_char();
      if (!input_waiting()) break;
    }
  } else {
    if (status < 0)
      T.eof = true;
    else
      read_some();
    deliver_lines();
  }
  update_watchers();
}

static void on_idle(uv_idle_t *h) {
  (void)h;
  if (T.interactive) {
    if (T.prompt_due && T.open) {
      T.prompt_due = false;
      rl_callback_handler_install(T.prompt, on_line);
      T.prompting = true;
    }
  } else {
    if (!T.pollable && !line_ready()) read_some();
    deliver_lines();
  }
  update_watchers();
}

/* Watch stdin only while someone waits for a line (a pipe is left
 * unread until then); plain files, which cannot be polled, are read
 * a piece per loop turn. */
static void update_watchers(void) {
  bool waiting = T.open && T.read_ref != LUA_NOREF;
  bool want_poll, want_idle;
  if (T.interactive) {
    want_poll = T.open && T.prompting;
    want_idle = T.open && T.prompt_due;
  } else {
    bool ready = line_ready();
    want_poll = waiting && !ready && T.pollable;
    want_idle = waiting && (ready || !T.pollable);
  }
  if (want_poll != T.polling) {
    if (want_poll)
      uv_poll_start(&T.poll, UV_READABLE, on_poll);
    else
      uv_poll_stop(&T.poll);
    T.polling = want_poll;
  }
  if (want_idle != T.idling) {
    if (want_idle)
      uv_idle_start(&T.idle, on_idle);
    else
      uv_idle_stop(&T.idle);
    T.idling = want_idle;
  }
}

/* ---- signals ---- */

static void on_sigwinch(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  if (T.prompting) rl_resize_terminal();
}

/* Only when asked for (attach): with a scheduler, its own SIGINT
 * handler decides and calls term.interrupt. */
static void on_sigint(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  if (T.prompting) {
    interrupt_line();
    rl_redisplay();
  } else if (T.interrupt_ref != LUA_NOREF) {
    lua_rawgeti(T.L, LUA_REGISTRYINDEX, T.interrupt_ref);
    if (call_lua(0, 1)) lua_pop(T.L, 1);
  }
}

static void on_timer(uv_timer_t *t) {
  (void)t;
  if (T.timer_ref == LUA_NOREF) return;
  lua_rawgeti(T.L, LUA_REGISTRYINDEX, T.timer_ref);
  mb_unref(T.L, T.timer_ref);
  T.timer_ref = LUA_NOREF;
  call_lua(0, 0);
}

static void on_handle_closed(uv_handle_t *h) {
  (void)h;
  T.handles_open--;
}

/* ---- the module ---- */

static int term_interactive(lua_State *L) {
  lua_pushboolean(L, isatty(STDIN_FILENO));
  return 1;
}

/* A function field of the table at idx, or nil; anything else raises. */
static void check_function_field(lua_State *L, int idx, const char *key) {
  int type = lua_getfield(L, idx, key);
  lua_pop(L, 1);
  if (type != LUA_TNIL && type != LUA_TFUNCTION)
    luaL_error(L, "term.open: %s: expected a function, got %s", key,
               lua_typename(L, type));
}

static int opt_ref(lua_State *L, int idx, const char *key) {
  if (lua_getfield(L, idx, key) == LUA_TNIL) {
    lua_pop(L, 1);
    return LUA_NOREF;
  }
  return mb_ref(L);
}

/* term.open{complete = fn(line, word) -> list, interrupt = fn() ->
 * prompt?, history = path, interruptible = bool, sigint = bool,
 * log_format = "text"|"json", log_level = name} */
static int term_open(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (T.open || T.handles_open)
    return luaL_error(L, "term.open: the terminal is already open");
  lua_getfield(L, 1, "history");
  const char *history = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "log_format");
  const char *format = luaL_optstring(L, -1, "text");
  lua_getfield(L, 1, "log_level");
  int level = mb_log_level_from_name(luaL_optstring(L, -1, "info"));
  lua_getfield(L, 1, "interruptible");
  bool interruptible = lua_toboolean(L, -1);
  lua_getfield(L, 1, "sigint");
  bool own_sigint = lua_toboolean(L, -1);
  /* The five values stay on the stack while their strings are used. */
  if (level < 0) return luaL_error(L, "term.open: unknown log level");
  check_function_field(L, 1, "complete");
  check_function_field(L, 1, "interrupt");
  T.loop = uv_default_loop();
  T.interactive = isatty(STDIN_FILENO);
  T.pollable = uv_poll_init(T.loop, &T.poll, STDIN_FILENO) == 0;
  if (T.interactive && !T.pollable)
    return luaL_error(L, "term.open: cannot watch the terminal");

  /* Nothing fails from here on. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  T.L = lua_tothread(L, -1);
  lua_pop(L, 1);
  T.interruptible = interruptible && T.interactive;
  T.history = history && T.interactive ? mb_xstrdup(history) : NULL;
  T.complete_ref = opt_ref(L, 1, "complete");
  T.interrupt_ref = opt_ref(L, 1, "interrupt");
  T.len = 0;
  T.eof = false;
  T.prompting = T.prompt_due = T.hidden = T.polling = T.idling = false;
  T.log_format = strcmp(format, "json") == 0 ? MB_LOG_JSON : MB_LOG_TEXT;
  T.log_level = level;
  uv_idle_init(T.loop, &T.idle);
  uv_timer_init(T.loop, &T.timer);
  T.handles_open = T.pollable ? 3 : 2;
  if (T.interactive) {
    uv_signal_init(T.loop, &T.sigwinch);
    uv_signal_start(&T.sigwinch, on_sigwinch, SIGWINCH);
    T.handles_open++;
    setup_readline();
  }
  T.own_sigint = own_sigint;
  if (own_sigint) {
    uv_signal_init(T.loop, &T.sigint);
    uv_signal_start(&T.sigint, on_sigint, SIGINT);
    T.handles_open++;
  }
  T.open = true;
  if (T.interactive) capture_log();
  return 0;
}

static void check_open(lua_State *L, const char *what) {
  if (!T.open) luaL_error(L, "term.%s: the terminal is not open", what);
}

/* term.read(prompt, fn): show prompt (on a terminal) and call fn with
 * the next line, or nil when the input ends. */
static int term_read(lua_State *L) {
  check_open(L, "read");
  const char *prompt = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (T.read_ref != LUA_NOREF)
    return luaL_error(L, "term.read: already waiting for a line");
  lua_settop(L, 2);
  T.read_ref = mb_ref(L);
  if (T.interactive) {
    /* Shown from the loop, once whoever runs it (a scheduler) has its
     * signal handlers in place. */
    free(T.prompt);
    T.prompt = mb_xstrdup(prompt);
    T.prompt_due = true;
  }
  update_watchers();
  return 0;
}

/* term.write(text, "stdout"|"stderr"): above the prompt when one is
 * shown. */
static int term_write(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  const char *stream = luaL_optstring(L, 2, "stdout");
  output(strcmp(stream, "stderr") == 0 ? stderr : stdout, text, len);
  return 0;
}

/* term.add_history(text): a line to recall, kept in the history file. */
static int term_add_history(lua_State *L) {
  const char *text = luaL_checkstring(L, 1);
  if (!T.open || !T.interactive) return 0;
  add_history(text);
  /* append_history needs the file to exist; write_history makes it. */
  if (T.history && append_history(1, T.history) != 0)
    write_history(T.history);
  return 0;
}

/* term.interrupt() -> whether the terminal is the REPL's: then the line
 * being typed, if any, is dropped as Ctrl-C does, and nothing else is to
 * come of the SIGINT. */
static int term_interrupt(lua_State *L) {
  bool owned = T.open && T.interactive;
  if (owned && T.prompting) {
    interrupt_line();
    rl_redisplay();
  }
  lua_pushboolean(L, owned);
  return 1;
}

/* term.after(seconds, fn): call fn once after seconds, replacing what
 * was waiting; nil stops it. For a front end without a scheduler. */
static int term_after(lua_State *L) {
  check_open(L, "after");
  double seconds = luaL_checknumber(L, 1);
  luaL_argcheck(L, seconds >= 0, 1, "must be >= 0");
  mb_unref(L, T.timer_ref);
  T.timer_ref = LUA_NOREF;
  uv_timer_stop(&T.timer);
  if (lua_isnoneornil(L, 2)) return 0;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  T.timer_ref = mb_ref(L);
  uv_timer_start(&T.timer, on_timer, (uint64_t)(seconds * 1000), 0);
  return 0;
}

static void close_handle(uv_handle_t *h) {
  uv_close(h, on_handle_closed);
}

/* term.close(): stop reading, give the terminal back as it was, and
 * let go of the callbacks. The handles close on the next loop turn. */
static int term_close(lua_State *L) {
  if (!T.open) return 0;
  if (T.prompting) {
    hide_prompt();
    rl_callback_handler_remove();
    T.prompting = false;
  }
  T.hidden = T.prompt_due = false;
  T.open = false;
  release_log();
  if (T.pollable) close_handle((uv_handle_t *)&T.poll);
  close_handle((uv_handle_t *)&T.idle);
  close_handle((uv_handle_t *)&T.timer);
  T.polling = T.idling = false;
  if (T.interactive) {
    close_handle((uv_handle_t *)&T.sigwinch);
    if (T.history) history_truncate_file(T.history, HISTORY_LINES);
    clear_history();
  }
  if (T.own_sigint) close_handle((uv_handle_t *)&T.sigint);
  mb_unref(L, T.read_ref);
  mb_unref(L, T.complete_ref);
  mb_unref(L, T.interrupt_ref);
  mb_unref(L, T.timer_ref);
  T.read_ref = T.complete_ref = T.interrupt_ref = T.timer_ref = LUA_NOREF;
  free(T.prompt);
  free(T.history);
  free(T.buf);
  T.prompt = T.history = T.buf = NULL;
  T.len = T.cap = 0;
  return 0;
}

/* term.run(): run the loop until nothing is left on it. For a front end
 * with no scheduler (attach); never from inside the loop. */
static int term_run(lua_State *L) {
  (void)L;
  uv_run(uv_default_loop(), UV_RUN_DEFAULT);
  return 0;
}

static const luaL_Reg term_functions[] = {
  {"interactive", term_interactive},
  {"open", term_open},
  {"read", term_read},
  {"write", term_write},
  {"add_history", term_add_history},
  {"interrupt", term_interrupt},
  {"after", term_after},
  {"close", term_close},
  {"run", term_run},
  {NULL, NULL}
};

int luaopen_mb_term(lua_State *L) {
  luaL_newlib(L, term_functions);
  return 1;
}
