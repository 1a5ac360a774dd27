/* curl_lib.h: libcurl, loaded the first time a job needs HTTP. Linking
 * it would map libcurl and everything it depends on (TLS, Kerberos,
 * LDAP: about 4.5 MB resident) into every scheduler, most of which never
 * make a request. Code that includes this header calls curl_* as usual;
 * the names go through the table mb_curl_load fills. */
#ifndef MB_CURL_LIB_H
#define MB_CURL_LIB_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct mb_curl_api {
  CURLcode (*global_init)(long flags);
  CURL *(*easy_init)(void);
  void (*easy_cleanup)(CURL *h);
  CURLcode (*easy_setopt)(CURL *h, CURLoption opt, ...);
  CURLcode (*easy_getinfo)(CURL *h, CURLINFO info, ...);
  const char *(*easy_strerror)(CURLcode code);
  CURLM *(*multi_init)(void);
  CURLMcode (*multi_cleanup)(CURLM *m);
  CURLMcode (*multi_setopt)(CURLM *m, CURLMoption opt, ...);
  CURLMcode (*multi_add_handle)(CURLM *m, CURL *h);
  CURLMcode (*multi_remove_handle)(CURLM *m, CURL *h);
  CURLMcode (*multi_assign)(CURLM *m, curl_socket_t s, void *p);
  CURLMcode (*multi_socket_action)(CURLM *m, curl_socket_t s, int mask,
                                   int *running);
  CURLMsg *(*multi_info_read)(CURLM *m, int *left);
  struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
  void (*slist_free_all)(struct curl_slist *l);
} mb_curl_api;

extern mb_curl_api mb_curl;

/* Load libcurl once; true when it is ready, else false with why in err. */
bool mb_curl_load(char *err, size_t n);

#ifndef MB_CURL_LIB_IMPL
/* curl.h wraps these in macros of its own (type checks). */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_multi_setopt
#define curl_global_init mb_curl.global_init
#define curl_easy_init mb_curl.easy_init
#define curl_easy_cleanup mb_curl.easy_cleanup
#define curl_easy_setopt mb_curl.easy_setopt
#define curl_easy_getinfo mb_curl.easy_getinfo
#define curl_easy_strerror mb_curl.easy_strerror
#define curl_multi_init mb_curl.multi_init
#define curl_multi_cleanup mb_curl.multi_cleanup
#define curl_multi_setopt mb_curl.multi_setopt
#define curl_multi_add_handle mb_curl.multi_add_handle
#define curl_multi_remove_handle mb_curl.multi_remove_handle
#define curl_multi_assign mb_curl.multi_assign
#define curl_multi_socket_action mb_curl.multi_socket_action
#define curl_multi_info_read mb_curl.multi_info_read
#define curl_slist_append mb_curl.slist_append
#define curl_slist_free_all mb_curl.slist_free_all
#endif

#endif
