/* curl_lib.c: libcurl by dlopen, on first use. */
#define MB_CURL_LIB_IMPL
#include "curl_lib.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

mb_curl_api mb_curl;

/* Debian's libcurl4-openssl-dev: the runtime library's soname. */
#define LIBCURL "libcurl.so.4"

bool mb_curl_load(char *err, size_t n) {
  static bool loaded;
  if (loaded) return true;
  void *lib = dlopen(LIBCURL, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    snprintf(err, n, "cannot load %s: %s", LIBCURL, dlerror());
    return false;
  }
  /* dlsym hands back object pointers; POSIX guarantees they convert. */
  static const struct {
    const char *name;
    size_t offset;
  } symbols[] = {
#define SYM(field, name) {name, offsetof(mb_curl_api, field)}
      SYM(global_init, "curl_global_init"),
      SYM(easy_init, "curl_easy_init"),
      SYM(easy_cleanup, "curl_easy_cleanup"),
      SYM(easy_setopt, "curl_easy_setopt"),
      SYM(easy_getinfo, "curl_easy_getinfo"),
      SYM(easy_strerror, "curl_easy_strerror"),
      SYM(multi_init, "curl_multi_init"),
      SYM(multi_cleanup, "curl_multi_cleanup"),
      SYM(multi_setopt, "curl_multi_setopt"),
      SYM(multi_add_handle, "curl_multi_add_handle"),
      SYM(multi_remove_handle, "curl_multi_remove_handle"),
      SYM(multi_assign, "curl_multi_assign"),
      SYM(multi_socket_action, "curl_multi_socket_action"),
      SYM(multi_info_read, "curl_multi_info_read"),
      SYM(slist_append, "curl_slist_append"),
      SYM(slist_free_all, "curl_slist_free_all"),
#undef SYM
  };
  mb_curl_api api;
  for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
    void *fn = dlsym(lib, symbols[i].name);
    if (!fn) {
      snprintf(err, n, "%s has no %s", LIBCURL, symbols[i].name);
      dlclose(lib);
      return false;
    }
    memcpy((char *)&api + symbols[i].offset, &fn, sizeof fn);
  }
  mb_curl = api;
  loaded = true;
  return true;
}
