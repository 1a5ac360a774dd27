/* http.c: libcurl's multi-socket interface on a libuv loop. curl tells
 * us which sockets to watch (socket callback) and when to call it back
 * (timer callback); we answer with curl_multi_socket_action from poll
 * and timer callbacks, and hand finished transfers back to their runs. */
#include "http.h"

#include <ctype.h>
#include <lauxlib.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "curl_lib.h"
#include "run.h"

typedef struct http_loop http_loop;
typedef struct transfer transfer;

/* A socket curl asked us to watch. */
typedef struct watch {
  uv_poll_t poll;
  curl_socket_t fd;
  http_loop *hl;
  struct watch *next, **prevp;
} watch;

/* One per uv loop: the multi handle (and its connection cache). */
struct http_loop {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  watch *watches;
  transfer *finished;    /* done, not yet handed back to their runs */
  int transfers;         /* added and not yet handed back or cancelled */
  int closing_handles;   /* close callbacks still to come */
  bool close_when_idle;
  bool dead;             /* closed: freed after the last close callback */
  http_loop *next;
};

struct bytes {
  char *data;
  size_t len, cap;
};

struct transfer {
  http_loop *hl;
  CURL *easy;
  mb_run *run;
  lua_State *co;
  struct curl_slist *headers;
  struct bytes body, head;
  size_t max_body;
  bool too_large;
  CURLcode result;
  char method[24];
  char *url;
  char errbuf[CURL_ERROR_SIZE];
  transfer *next_finished;
};

static http_loop *loops;
static int live_watches;

static void bytes_add(struct bytes *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1) cap *= 2;
    b->data = mb_xrealloc(b->data, cap);
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
}

/* ---- the loop's handles ---- */

static void free_if_done(http_loop *hl) {
  if (hl->dead && hl->closing_handles == 0) free(hl);
}

static void on_watch_closed(uv_handle_t *handle) {
  watch *w = handle->data;
  http_loop *hl = w->hl;
  free(w);
  live_watches--;
  hl->closing_handles--;
  free_if_done(hl);
}

static void drop_watch(watch *w) {
  *w->prevp = w->next;
  if (w->next) w->next->prevp = w->prevp;
  w->hl->closing_handles++;
  uv_close((uv_handle_t *)&w->poll, on_watch_closed);
}

/* An idle multi handle must not keep the loop alive: `moonbeat run`
 * with nothing left to do still ends. */
static void set_refs(http_loop *hl) {
  bool busy = hl->transfers > 0;
  void (*apply)(uv_handle_t *) = busy ? uv_ref : uv_unref;
  apply((uv_handle_t *)&hl->timer);
  for (watch *w = hl->watches; w; w = w->next) apply((uv_handle_t *)&w->poll);
}

static void finish_all(http_loop *hl);

/* Collect what curl finished; hand it back once curl is out of the way. */
static void collect(http_loop *hl) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(hl->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    transfer *t = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
    t->result = msg->data.result;
    curl_multi_remove_handle(hl->multi, t->easy);
    /* Keep their order: the first finished is the first resumed. */
    transfer **tail = &hl->finished;
    while (*tail) tail = &(*tail)->next_finished;
    *tail = t;
  }
  finish_all(hl);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  watch *w = p->data;
  http_loop *hl = w->hl;
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  int running;
  curl_multi_socket_action(hl->multi, w->fd, flags, &running);
  collect(hl);
}

static void on_timer(uv_timer_t *timer) {
  http_loop *hl = timer->data;
  int running;
  curl_multi_socket_action(hl->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  collect(hl);
}

/* CURLMOPT_SOCKETFUNCTION */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *data,
                     void *socket_data) {
  (void)easy;
  http_loop *hl = data;
  watch *w = socket_data;
  if (what == CURL_POLL_REMOVE) {
    if (w) drop_watch(w);
    return 0;
  }
  if (!w) {
    w = mb_xcalloc(1, sizeof *w);
    if (uv_poll_init_socket(hl->loop, &w->poll, fd) < 0) {
      free(w);
      return -1;
    }
    live_watches++;
    w->fd = fd;
    w->hl = hl;
    w->poll.data = w;
    w->next = hl->watches;
    w->prevp = &hl->watches;
    if (hl->watches) hl->watches->prevp = &w->next;
    hl->watches = w;
    if (hl->transfers == 0) uv_unref((uv_handle_t *)&w->poll);
    curl_multi_assign(hl->multi, fd, w);
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  uv_poll_start(&w->poll, events, on_poll);
  return 0;
}

/* CURLMOPT_TIMERFUNCTION: a real timer, whatever the scheduler's clock:
 * curl's timeouts are about the network, not the schedule. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *data) {
  (void)multi;
  http_loop *hl = data;
  if (timeout_ms < 0)
    uv_timer_stop(&hl->timer);
  else
    uv_timer_start(&hl->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

static void on_timer_closed(uv_handle_t *handle) {
  http_loop *hl = handle->data;
  hl->closing_handles--;
  free_if_done(hl);
}

static void unlink_loop(http_loop *hl) {
  for (http_loop **p = &loops; *p; p = &(*p)->next) {
    if (*p == hl) {
      *p = hl->next;
      return;
    }
  }
}

static void close_loop(http_loop *hl) {
  unlink_loop(hl);
  hl->dead = true;
  /* Closing the cached connections tells on_socket to drop their
   * watches; any left are dropped here. */
  curl_multi_cleanup(hl->multi);
  hl->multi = NULL;
  while (hl->watches) drop_watch(hl->watches);
  hl->closing_handles++;
  uv_close((uv_handle_t *)&hl->timer, on_timer_closed);
}

static void transfer_ended(http_loop *hl) {
  hl->transfers--;
  if (hl->transfers == 0) {
    if (hl->close_when_idle)
      close_loop(hl);
    else
      set_refs(hl);
  }
}

void mb_http_loop_close(uv_loop_t *loop) {
  for (http_loop *hl = loops; hl; hl = hl->next) {
    if (hl->loop != loop) continue;
    if (hl->transfers > 0)
      hl->close_when_idle = true;
    else
      close_loop(hl);
    return;
  }
}

static http_loop *loop_for(uv_loop_t *loop) {
  for (http_loop *hl = loops; hl; hl = hl->next)
    if (hl->loop == loop) return hl;
  static bool curl_ready;
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return NULL;
    curl_ready = true;
  }
  CURLM *multi = curl_multi_init();
  if (!multi) return NULL;
  http_loop *hl = mb_xcalloc(1, sizeof *hl);
  hl->loop = loop;
  hl->multi = multi;
  uv_timer_init(loop, &hl->timer);
  hl->timer.data = hl;
  uv_unref((uv_handle_t *)&hl->timer);
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, hl);
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(multi, CURLMOPT_TIMERDATA, hl);
  hl->next = loops;
  loops = hl;
  return hl;
}

/* ---- transfers ---- */

static void transfer_free(transfer *t) {
  curl_easy_cleanup(t->easy);
  curl_slist_free_all(t->headers);
  free(t->body.data);
  free(t->head.data);
  free(t->url);
  free(t);
}

static size_t on_body(char *p, size_t size, size_t n, void *data) {
  transfer *t = data;
  size_t len = size * n;
  if (t->body.len + len > t->max_body) {
    t->too_large = true;
    return 0;  /* curl ends the transfer with CURLE_WRITE_ERROR */
  }
  bytes_add(&t->body, p, len);
  return len;
}

/* Headers of the last response only: a redirect or a 100 Continue
 * starts a new status line. */
static size_t on_header(char *p, size_t size, size_t n, void *data) {
  transfer *t = data;
  size_t len = size * n;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) t->head.len = 0;
  bytes_add(&t->head, p, len);
  return len;
}

static const char *error_code(const transfer *t) {
  switch (t->result) {
  case CURLE_COULDNT_CONNECT: return "connect";
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY: return "dns";
  case CURLE_OPERATION_TIMEDOUT: return "timeout";
  case CURLE_TOO_MANY_REDIRECTS: return "redirects";
  case CURLE_URL_MALFORMAT:
  case CURLE_UNSUPPORTED_PROTOCOL: return "url";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_USE_SSL_FAILED: return "tls";
  case CURLE_FILESIZE_EXCEEDED: return "too_large";
  case CURLE_WRITE_ERROR: return t->too_large ? "too_large" : "transfer";
  default: return "transfer";
  }
}

/* Response headers as a table: lower-case names; a repeated header's
 * values joined with ", " (as HTTP allows). */
static void push_headers(lua_State *co, const struct bytes *head) {
  lua_newtable(co);
  const char *p = head->data ? head->data : "";
  const char *end = p + head->len;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) eol = end;
    const char *colon = memchr(p, ':', (size_t)(eol - p));
    bool status_line = eol - p >= 5 && memcmp(p, "HTTP/", 5) == 0;
    if (colon && colon > p && !status_line) {
      luaL_Buffer b;
      luaL_buffinit(co, &b);
      for (const char *c = p; c < colon; c++)
        luaL_addchar(&b, (char)tolower((unsigned char)*c));
      luaL_pushresult(&b);
      const char *v = colon + 1, *vend = eol;
      while (v < vend && (*v == ' ' || *v == '\t')) v++;
      while (vend > v && isspace((unsigned char)vend[-1])) vend--;
      lua_pushvalue(co, -1);
      if (lua_rawget(co, -3) == LUA_TSTRING) {
        lua_pushliteral(co, ", ");
        lua_pushlstring(co, v, (size_t)(vend - v));
        lua_concat(co, 3);
      } else {
        lua_pop(co, 1);
        lua_pushlstring(co, v, (size_t)(vend - v));
      }
      lua_rawset(co, -3);
    }
    p = eol + 1;
  }
}

/* Push the results on the run's thread; returns how many. */
static int push_results(transfer *t) {
  lua_State *co = t->co;
  if (t->result != CURLE_OK) {
    lua_pushnil(co);
    if (strcmp(error_code(t), "too_large") == 0)
      lua_pushfstring(co, "%s %s: the response body is larger than "
                      "max_body (%I bytes)", t->method, t->url,
                      (lua_Integer)t->max_body);
    else
      lua_pushfstring(co, "%s %s: %s", t->method, t->url,
                      t->errbuf[0] ? t->errbuf
                                   : curl_easy_strerror(t->result));
    lua_pushstring(co, error_code(t));
    return 3;
  }
  long status = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  char *effective = NULL;
  curl_easy_getinfo(t->easy, CURLINFO_EFFECTIVE_URL, &effective);
  lua_pushinteger(co, status);
  push_headers(co, &t->head);
  lua_pushlstring(co, t->body.data ? t->body.data : "", t->body.len);
  lua_pushstring(co, effective ? effective : t->url);
  return 4;
}

static void finish_all(http_loop *hl) {
  transfer *t;
  while ((t = hl->finished)) {
    hl->finished = t->next_finished;
    mb_run *run = t->run;
    int n = push_results(t);
    transfer_free(t);
    transfer_ended(hl);
    /* The run may make new requests, or cancel other runs (and so
     * transfers on this list): hl->finished is read afresh each time. */
    mb_run_wake(run, n);
    if (hl->dead) return;
  }
}

static void cancel_transfer(mb_run *run, void *wait) {
  (void)run;
  transfer *t = wait;
  http_loop *hl = t->hl;
  bool was_finished = false;
  for (transfer **p = &hl->finished; *p; p = &(*p)->next_finished) {
    if (*p == t) {
      *p = t->next_finished;
      was_finished = true;
      break;
    }
  }
  /* A transfer removed mid-way leaves no connection half used: curl
   * closes it. */
  if (!was_finished) curl_multi_remove_handle(hl->multi, t->easy);
  transfer_free(t);
  transfer_ended(hl);
}

/* ---- from Lua ---- */

static const char *opt_string(lua_State *L, const char *key) {
  lua_getfield(L, 1, key);
  const char *s = lua_tostring(L, -1);
  lua_pop(L, 1);  /* the request table keeps it alive */
  return s;
}

static lua_Number opt_number(lua_State *L, const char *key, lua_Number d) {
  lua_getfield(L, 1, key);
  lua_Number n = luaL_optnumber(L, -1, d);
  lua_pop(L, 1);
  return n;
}

static bool opt_bool(lua_State *L, const char *key, bool d) {
  bool b = lua_getfield(L, 1, key) == LUA_TNIL ? d : lua_toboolean(L, -1);
  lua_pop(L, 1);
  return b;
}

/* request{method, url, headers = {"Name: value", ...}, body, timeout
 * (seconds, 0: none), follow, max_redirects, verify, ca_file, max_body}:
 * the table as stdlib/http.lua builds it. Yields the run until the
 * response (status, headers, body, url) or nil, message, code. */
static int http_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  mb_run *run = mb_run_current(L);
  if (!run)
    return luaL_error(L, "http: only a job's run can make a request (this "
                      "code is not running as a job's run function)");
  const char *method = opt_string(L, "method");
  const char *url = opt_string(L, "url");
  luaL_argcheck(L, method && strlen(method) < 24, 1, "method: expected a "
                "short string");
  luaL_argcheck(L, url != NULL, 1, "url: expected a string");
  size_t body_len = 0;
  lua_getfield(L, 1, "body");
  const char *body = lua_tolstring(L, -1, &body_len);
  lua_pop(L, 1);
  double timeout = opt_number(L, "timeout", 0);
  double max_body = opt_number(L, "max_body", 0);
  long max_redirects = (long)opt_number(L, "max_redirects", 10);
  const char *ca_file = opt_string(L, "ca_file");
  luaL_argcheck(L, max_body >= 1 && max_body <= (double)INT32_MAX, 1,
                "max_body: expected a positive number of bytes");

  http_loop *hl = loop_for(mb_clock_loop(mb_run_clock(run)));
  CURL *easy = hl ? curl_easy_init() : NULL;
  if (!easy) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s %s: cannot start libcurl", method, url);
    lua_pushliteral(L, "transfer");
    return 3;
  }
  transfer *t = mb_xcalloc(1, sizeof *t);
  t->hl = hl;
  t->easy = easy;
  t->run = run;
  t->co = L;
  t->max_body = (size_t)max_body;
  snprintf(t->method, sizeof t->method, "%s", method);
  t->url = mb_xstrdup(url);

  if (lua_getfield(L, 1, "headers") == LUA_TTABLE) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      const char *line = lua_tostring(L, -1);
      if (line) t->headers = curl_slist_append(t->headers, line);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  /* Without this, curl holds a large body back waiting for a "100
   * Continue" that many servers never send. */
  t->headers = curl_slist_append(t->headers, "Expect:");

  curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
  curl_easy_setopt(easy, CURLOPT_URL, t->url);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->errbuf);
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_USERAGENT, "moonbeat");
  curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t->headers);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, t);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, t);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                   (long)(timeout > 0 ? ceil(timeout * 1000) : 0));
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION,
                   opt_bool(L, "follow", true) ? 1L : 0L);
  curl_easy_setopt(easy, CURLOPT_MAXREDIRS, max_redirects);
  bool verify = opt_bool(L, "verify", true);
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, verify ? 1L : 0L);
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
  if (ca_file) curl_easy_setopt(easy, CURLOPT_CAINFO, ca_file);
  /* The size of a body the server sends is known to be too big before
   * any of it arrives; otherwise on_body counts. */
  curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_body);

  /* A POST is curl's own (so a 303 turns it into a GET, as browsers
   * do); any other method with a body is a custom one carrying it. */
  bool post = strcmp(method, "POST") == 0;
  if (post && !body) body = "";
  if (strcmp(method, "HEAD") == 0)
    curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
  else if (!post && (strcmp(method, "GET") != 0 || body))
    curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, t->method);
  if (body) {
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS, body);
  }

  if (curl_multi_add_handle(hl->multi, easy) != CURLM_OK) {
    transfer_free(t);
    lua_pushnil(L);
    lua_pushfstring(L, "%s %s: cannot start the transfer", method, url);
    lua_pushliteral(L, "transfer");
    return 3;
  }
  if (hl->transfers++ == 0) set_refs(hl);
  return mb_run_wait(run, cancel_transfer, t);
}

/* stats() -> {transfers, sockets, loops}: what is alive, for the specs'
 * leak checks. */
static int http_stats(lua_State *L) {
  int transfers = 0, nloops = 0;
  for (http_loop *hl = loops; hl; hl = hl->next) {
    transfers += hl->transfers;
    nloops++;
  }
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, transfers);
  lua_setfield(L, -2, "transfers");
  lua_pushinteger(L, live_watches);
  lua_setfield(L, -2, "sockets");
  lua_pushinteger(L, nloops);
  lua_setfield(L, -2, "loops");
  return 1;
}

static const luaL_Reg http_functions[] = {
  {"request", http_request},
  {"stats", http_stats},
  {NULL, NULL}
};

int luaopen_moonbeat_core_http(lua_State *L) {
  char err[256];
  if (!mb_curl_load(err, sizeof err))
    return luaL_error(L, "moonbeat.http: %s", err);
  luaL_newlib(L, http_functions);
  return 1;
}
