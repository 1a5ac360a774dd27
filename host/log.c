/* log.c: text and JSON-lines formatting. */
#include "log.h"

#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "tz.h"

static FILE *log_out;
static int log_format = MB_LOG_TEXT;
static int log_min = MB_LOG_INFO;
static bool log_configured;
static mb_log_sink log_sink;
static void *log_sink_data;
static mb_log_clock log_clock;
static void *log_clock_data;

static const char *const level_names[] = {"debug", "info", "warn", "error",
                                          "off"};

void mb_log_configure(FILE *out, int format, int min_level) {
  log_out = out;
  log_format = format;
  log_min = min_level;
  log_configured = true;
}

void mb_log_set_clock(mb_log_clock clock, void *data) {
  log_clock = clock;
  log_clock_data = data;
}

void mb_log_set_sink(mb_log_sink sink, void *data) {
  log_sink = sink;
  log_sink_data = data;
}

int mb_log_level_from_name(const char *name) {
  for (int i = 0; i <= MB_LOG_OFF; i++)
    if (strcmp(name, level_names[i]) == 0) return i;
  return -1;
}

const char *mb_log_level_name(int level) {
  return level >= 0 && level <= MB_LOG_OFF ? level_names[level] : "?";
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"': fputs("\\\"", f); break;
    case '\\': fputs("\\\\", f); break;
    case '\n': fputs("\\n", f); break;
    case '\r': fputs("\\r", f); break;
    case '\t': fputs("\\t", f); break;
    default:
      if (*p < 0x20)
        fprintf(f, "\\u%04x", *p);
      else
        fputc(*p, f);
    }
  }
  fputc('"', f);
}

/* A text value is quoted when a reader could not tell where it ends. */
static void text_value(FILE *f, const char *s) {
  bool plain = *s != '\0' && !strpbrk(s, " \t\n\"=");
  if (plain) {
    fputs(s, f);
    return;
  }
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    if (*s == '\n')
      fputs("\\n", f);
    else
      fputc(*s, f);
  }
  fputc('"', f);
}

static void human_duration(FILE *f, long long usec) {
  const char *sign = usec < 0 ? "-" : "";
  long long u = usec < 0 ? -usec : usec;
  if (u < 1000)
    fprintf(f, "%s%lldus", sign, u);
  else if (u < 1000000)
    fprintf(f, "%s%.1fms", sign, (double)u / 1e3);
  else
    fprintf(f, "%s%.3fs", sign, (double)u / 1e6);
}

static mb_time log_now(void) {
  if (log_clock) return log_clock(log_clock_data);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (mb_time)ts.tv_sec * MB_SEC + ts.tv_nsec / 1000;
}

static void write_json(FILE *f, int level, const char *msg,
                       const mb_log_field *fields, size_t n) {
  char when[64];
  mb_time now = log_now();
  mb_time_format(now - now % 1000, mb_tz_utc(), when, sizeof when);
  fputs("{\"time\":", f);
  json_string(f, when);
  fprintf(f, ",\"level\":\"%s\",\"msg\":", level_names[level]);
  json_string(f, msg);
  for (size_t i = 0; i < n; i++) {
    fputc(',', f);
    json_string(f, fields[i].key);
    fputc(':', f);
    switch (fields[i].type) {
    case MB_LF_STR: json_string(f, fields[i].s ? fields[i].s : ""); break;
    case MB_LF_INT: fprintf(f, "%lld", fields[i].i); break;
    case MB_LF_NUM: fprintf(f, "%.17g", fields[i].n); break;
    case MB_LF_BOOL: fputs(fields[i].i ? "true" : "false", f); break;
    case MB_LF_DUR: fprintf(f, "%.6f", (double)fields[i].i / 1e6); break;
    }
  }
  fputs("}\n", f);
}

static void write_text(FILE *f, int level, const char *msg,
                       const mb_log_field *fields, size_t n) {
  mb_civil c;
  mb_tz_to_civil(mb_tz_local(), log_now(), &c);
  static const char *const tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
  fprintf(f, "%04d-%02d-%02d %02d:%02d:%02d.%03d %s %s", c.year, c.month,
          c.day, c.hour, c.min, c.sec, c.usec / 1000, tags[level], msg);
  const char *trace = NULL;
  for (size_t i = 0; i < n; i++) {
    if (fields[i].type == MB_LF_STR && strcmp(fields[i].key, "traceback") == 0) {
      trace = fields[i].s;
      continue;
    }
    fprintf(f, " %s=", fields[i].key);
    switch (fields[i].type) {
    case MB_LF_STR: text_value(f, fields[i].s ? fields[i].s : ""); break;
    case MB_LF_INT: fprintf(f, "%lld", fields[i].i); break;
    case MB_LF_NUM: fprintf(f, "%.6g", fields[i].n); break;
    case MB_LF_BOOL: fputs(fields[i].i ? "true" : "false", f); break;
    case MB_LF_DUR: human_duration(f, fields[i].i); break;
    }
  }
  fputc('\n', f);
  /* A traceback reads best as the lines Lua wrote, indented. */
  if (trace) {
    for (const char *p = trace; *p;) {
      const char *eol = strchr(p, '\n');
      int len = eol ? (int)(eol - p) : (int)strlen(p);
      fprintf(f, "    %.*s\n", len, p);
      p += len + (eol != NULL);
    }
  }
}

bool mb_log_wanted(int level) {
  if (log_sink) return true;
  FILE *f = log_configured ? log_out : stderr;
  return f && level >= log_min;
}

/* A line is formatted whole, then written in one call: stderr is
 * unbuffered, and a line written piece by piece took a system call per
 * piece, about a hundred (70 us a line, 70 s for a start that logs a
 * million jobs coming back). Lines are logged from the loop thread. */
static FILE *line;
static char *line_text;
static size_t line_size;

void mb_log(int level, const char *msg, const mb_log_field *fields,
            size_t n) {
  if (level < MB_LOG_DEBUG || level > MB_LOG_ERROR) level = MB_LOG_ERROR;
  if (log_sink) log_sink(level, msg, fields, n, log_sink_data);
  FILE *f = log_configured ? log_out : stderr;
  if (!f || level < log_min) return;
  if (!line) line = open_memstream(&line_text, &line_size);
  /* Without memory for the line, it goes out piece by piece. */
  FILE *w = line && fseeko(line, 0, SEEK_SET) == 0 ? line : f;
  if (log_format == MB_LOG_JSON)
    write_json(w, level, msg, fields, n);
  else
    write_text(w, level, msg, fields, n);
  if (w == line && fflush(line) == 0) {
    off_t len = ftello(line);
    if (len > 0) fwrite(line_text, 1, (size_t)len, f);
  }
  fflush(f);
}
