/* http — moe-server's HTTP front end on libmicrohttpd: one thread per
 * connection, bodies collected up to a limit, the API key, routing, and
 * server-sent events for streamed completions. A thread waiting for a
 * completion polls its socket so that a client going away cancels its task
 * (and frees its slot) within a tenth of a second. See server.h. */
/* POLLRDHUP needs _GNU_SOURCE, which the build defines */
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/base/log.h"
#include "runtime/server/server.h"

enum { WAIT_SLICE_MS = 100 };

struct srv_http {
    srv_api *api;
    srv_http_config cfg;
    struct MHD_Daemon *daemon;
    atomic_int in_flight;
    atomic_bool draining;
};

/* Per request: the body as it arrives. */
typedef struct conn_req {
    char *body;
    size_t len, cap;
    bool too_large;
} conn_req;

/* A streamed completion, owned by its MHD response. */
typedef struct stream {
    srv_http *h;
    srv_request req;
    int fd;
    size_t sent;               /* bytes of the task's text turned into events */
    bool first, finished;
    char *pending;             /* the events not yet handed to MHD */
    size_t pending_len, pending_off;
} stream;

/* Whether the peer closed its side (or the socket failed). */
static bool client_gone(int fd) {
    if (fd < 0)
        return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static int conn_fd(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

static enum MHD_Result send_reply(srv_http *h, struct MHD_Connection *conn, srv_reply r) {
    if (!r.body)
        return MHD_NO;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(r.body), r.body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(r.body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", r.content_type ? r.content_type
                                                                 : "application/json");
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
    if (r.status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    if (atomic_load(&h->draining))
        MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r.status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- streaming ---------------------------------------------------------------------------- */

/* Appends an event (malloc'd, may be NULL) to the pending bytes. */
static void stream_push(stream *s, char *ev) {
    if (!ev)
        return;
    size_t n = strlen(ev);
    char *p = realloc(s->pending, s->pending_len + n);
    if (p) {
        memcpy(p + s->pending_len, ev, n);
        s->pending = p;
        s->pending_len += n;
    }
    free(ev);
}

/* Turns what the task has ready into events; after the last one, [DONE]. */
static void stream_fill(stream *s, bool done, size_t ready) {
    srv_engine *e = s->h->api->engine;
    s->pending_len = s->pending_off = 0;
    srv_engine_lock(e);
    if (ready > s->sent || (s->first && !done)) {
        stream_push(s, srv_api_chunk(s->h->api, &s->req, s->sent, ready, s->first, false));
        s->first = false;
        s->sent = ready;
    }
    if (done) {
        stream_push(s, srv_api_chunk(s->h->api, &s->req, s->sent, s->sent, s->first, true));
        stream_push(s, strdup("data: [DONE]\n\n"));
        s->finished = true;
    }
    srv_engine_unlock(e);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream *s = cls;
    while (s->pending_off == s->pending_len) {
        if (s->finished)
            return MHD_CONTENT_READER_END_OF_STREAM;
        size_t ready;
        bool done = srv_engine_wait(s->h->api->engine, s->req.task, s->sent, WAIT_SLICE_MS,
                                    &ready);
        if (done || ready > s->sent || s->first)
            stream_fill(s, done, ready);
        else if (client_gone(s->fd))
            return MHD_CONTENT_READER_END_WITH_ERROR; /* stream_free cancels */
    }
    size_t n = s->pending_len - s->pending_off;
    if (n > max)
        n = max;
    memcpy(buf, s->pending + s->pending_off, n);
    s->pending_off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    stream *s = cls;
    srv_engine *e = s->h->api->engine;
    if (!s->finished)
        srv_engine_cancel(e, s->req.task);
    srv_task_release(e, s->req.task);
    free(s->pending);
    free(s);
}

static enum MHD_Result start_stream(srv_http *h, struct MHD_Connection *conn,
                                    const srv_request *req) {
    stream *s = calloc(1, sizeof *s);
    if (!s) {
        srv_engine_cancel(h->api->engine, req->task);
        srv_task_release(h->api->engine, req->task);
        return send_reply(h, conn, srv_error_reply(500, "out of memory"));
    }
    s->h = h;
    s->req = *req;
    s->fd = conn_fd(conn);
    s->first = true;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_free);
    if (!resp) {
        stream_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
    enum MHD_Result ret = MHD_queue_response(conn, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- completions -------------------------------------------------------------------------- */

static enum MHD_Result completion(srv_http *h, struct MHD_Connection *conn, const conn_req *cr,
                                  bool chat) {
    srv_request req;
    srv_reply r;
    if (!srv_api_prepare(h->api, chat, cr->body ? cr->body : "", cr->len, &req, &r))
        return send_reply(h, conn, r);
    srv_engine *e = h->api->engine;
    srv_engine_submit(e, req.task);
    if (req.stream)
        return start_stream(h, conn, &req);
    int fd = conn_fd(conn);
    size_t ready;
    while (!srv_engine_wait(e, req.task, SIZE_MAX, WAIT_SLICE_MS, &ready)) {
        if (client_gone(fd)) {
            srv_engine_cancel(e, req.task);
            srv_task_release(e, req.task);
            return MHD_NO; /* nobody to answer: close */
        }
    }
    r = srv_api_final(h->api, &req); /* done: the task no longer changes */
    srv_task_release(e, req.task);
    return send_reply(h, conn, r);
}

/* ---- routing ------------------------------------------------------------------------------ */

/* "Authorization: Bearer KEY" against --api-key. */
static bool authorized(const srv_http *h, struct MHD_Connection *conn) {
    if (!h->cfg.api_key)
        return true;
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    return srv_secret_equal(auth + 7, h->cfg.api_key);
}

typedef enum route_kind { R_HEALTH, R_MODELS, R_COMPLETIONS, R_CHAT, R_TOKENIZE, R_DETOKENIZE,
                          R_METRICS } route_kind;

static const struct route {
    const char *path, *method;
    route_kind kind;
} routes[] = {
    {"/health", "GET", R_HEALTH},
    {"/v1/health", "GET", R_HEALTH},
    {"/v1/models", "GET", R_MODELS},
    {"/models", "GET", R_MODELS},
    {"/v1/completions", "POST", R_COMPLETIONS},
    {"/completions", "POST", R_COMPLETIONS},
    {"/v1/chat/completions", "POST", R_CHAT},
    {"/chat/completions", "POST", R_CHAT},
    {"/tokenize", "POST", R_TOKENIZE},
    {"/detokenize", "POST", R_DETOKENIZE},
    {"/metrics", "GET", R_METRICS},
};

static enum MHD_Result dispatch(srv_http *h, struct MHD_Connection *conn, const char *url,
                                const char *method, const conn_req *cr) {
    const struct route *rt = NULL;
    bool path_known = false;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(url, routes[i].path) != 0)
            continue;
        path_known = true;
        if (!strcmp(method, routes[i].method))
            rt = &routes[i];
    }
    if (!rt)
        return send_reply(h, conn, path_known
                                       ? srv_error_reply(405, "%s does not take %s", url, method)
                                       : srv_error_reply(404, "no endpoint %s", url));
    if (atomic_load(&h->draining))
        return send_reply(h, conn, srv_error_reply(503, "the server is shutting down"));
    if (rt->kind == R_HEALTH)
        return send_reply(h, conn, (srv_reply){.status = 200, .body = strdup("{\"status\":\"ok\"}")});
    if (!authorized(h, conn))
        return send_reply(h, conn, srv_error_reply(401, "invalid or missing API key (send "
                                                        "Authorization: Bearer KEY)"));
    if (cr->too_large)
        return send_reply(h, conn, srv_error_reply(413, "the request body is larger than %zu "
                                                        "bytes (--max-body)", h->cfg.max_body));
    const char *body = cr->body ? cr->body : "";
    switch (rt->kind) {
    case R_MODELS: return send_reply(h, conn, srv_api_models(h->api));
    case R_COMPLETIONS: return completion(h, conn, cr, false);
    case R_CHAT: return completion(h, conn, cr, true);
    case R_TOKENIZE: return send_reply(h, conn, srv_api_tokenize(h->api, body, cr->len));
    case R_DETOKENIZE: return send_reply(h, conn, srv_api_detokenize(h->api, body, cr->len));
    case R_METRICS: return send_reply(h, conn, srv_api_metrics(h->api));
    default: return MHD_NO;
    }
}

/* Collects the body (beyond max_body it is read and dropped, so the client
 * can read the 413), then dispatches. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)version;
    srv_http *h = cls;
    conn_req *cr = *con_cls;
    if (!cr) {
        cr = calloc(1, sizeof *cr);
        if (!cr)
            return MHD_NO;
        *con_cls = cr;
        atomic_fetch_add(&h->in_flight, 1);
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (cr->too_large || cr->len + n > h->cfg.max_body) {
            cr->too_large = true;
            free(cr->body);
            cr->body = NULL;
            cr->len = cr->cap = 0;
            return MHD_YES;
        }
        if (cr->len + n + 1 > cr->cap) {
            size_t cap = 2 * (cr->len + n) + 1;
            char *nb = realloc(cr->body, cap);
            if (!nb)
                return MHD_NO;
            cr->body = nb, cr->cap = cap;
        }
        memcpy(cr->body + cr->len, upload_data, n);
        cr->len += n;
        cr->body[cr->len] = '\0';
        return MHD_YES;
    }
    return dispatch(h, conn, url, method, cr);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode code) {
    (void)conn, (void)code;
    srv_http *h = cls;
    conn_req *cr = *con_cls;
    if (!cr)
        return;
    free(cr->body);
    free(cr);
    *con_cls = NULL;
    atomic_fetch_sub(&h->in_flight, 1);
}

moe_status srv_http_start(srv_api *api, const srv_http_config *cfg, srv_http **out,
                          int *port_out, moe_err *err) {
    *out = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    int rc = getaddrinfo(cfg->host, port, &hints, &ai);
    MOE_FAIL_IF(rc != 0, err, MOE_ERR_USAGE, "--host %s: %s", cfg->host, gai_strerror(rc));
    srv_http *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        return moe_fail(err, MOE_ERR_NOMEM, "out of memory");
    }
    h->api = api;
    h->cfg = *cfg;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_ITC | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0) |
                     (cfg->verbose ? MHD_USE_ERROR_LOG : 0);
    h->daemon = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, h,
                                 MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                                 MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections,
                                 MHD_OPTION_CONNECTION_TIMEOUT, 600u,
                                 MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->daemon) {
        free(h);
        return moe_fail(err, MOE_ERR_IO, "cannot listen on %s port %d (in use, or not an "
                                         "address of this machine?)", cfg->host, cfg->port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    *port_out = di ? di->port : cfg->port;
    *out = h;
    return MOE_OK;
}

void srv_http_quiesce(srv_http *h) {
    atomic_store(&h->draining, true);
    MHD_socket s = MHD_quiesce_daemon(h->daemon);
    if (s != MHD_INVALID_SOCKET)
        close(s);
}

int srv_http_in_flight(srv_http *h) { return atomic_load(&h->in_flight); }

void srv_http_stop(srv_http *h) {
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    free(h);
}
