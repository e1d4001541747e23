/* moe-server: serves one model to many clients over an OpenAI-compatible
 * HTTP API (as llama-server does), batching their tokens into one decode per
 * step. This file owns the options, start-up and the clean shutdown on
 * SIGINT / SIGTERM: stop accepting, let every request in flight finish, exit
 * 0 (a second signal exits at once). */
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "formats/base/log.h"
#include "runtime/server/server.h"
#include "runtime/tools/model_cli.h"

#define PROG "moe-server"

typedef struct server_opts {
    moe_model_cli mc;
    moe_sampling_cli sc;
    const char *host, *api_key, *alias, *chat_template;
    int64_t port, n_parallel, n_batch, n_predict, max_connections;
    uint64_t max_body;
} server_opts;

static volatile sig_atomic_t g_signals, g_last_signal;

static void on_signal(int sig) {
    g_last_signal = sig;
    if (++g_signals >= 2)
        _exit(1); /* threads are mid-request: do not tear down under them */
}

static void sleep_ms(long ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Serves until SIGINT / SIGTERM, then stops accepting and waits for every
 * request in flight; a second signal exits at once (status 1). */
static void wait_and_drain(srv_http *http, srv_engine *engine) {
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    while (!g_signals)
        sleep_ms(50);
    MOE_INFO("%s: finishing %d request(s) in flight, then exiting (again: exit now)",
             strsignal(g_last_signal), srv_http_in_flight(http));
    srv_http_quiesce(http);
    while (srv_http_in_flight(http) > 0 || srv_engine_busy(engine) > 0)
        sleep_ms(20);
}

static moe_status serve(const server_opts *o, moe_err *err) {
    moe_model *model = NULL;
    moe_context *ctx = NULL;
    srv_engine *engine = NULL;
    srv_http *http = NULL;
    moe_status st = moe_model_cli_load(&o->mc, (int32_t)o->n_parallel, (int32_t)o->n_batch,
                                       &model, &ctx, err);
    char *model_path = strdup(o->mc.model);
    srv_api api = {.model = model, .chat_template = o->chat_template,
                   .n_predict = (int32_t)o->n_predict, .created = (int64_t)time(NULL),
                   .model_id = o->alias ? o->alias : model_path ? basename(model_path) : "model",
                   .seed_random = o->sc.seed < 0};
    if (st == MOE_OK && moe_context_n_ctx(ctx) / (int32_t)o->n_parallel < 2)
        st = moe_fail(err, MOE_ERR_USAGE, "a context of %" PRId32 " split over %" PRId64
                      " slots leaves them no room: raise -c or lower -np",
                      moe_context_n_ctx(ctx), o->n_parallel);
    if (st == MOE_OK) {
        api.sampling = moe_sampling_cli_params(&o->sc, moe_context_n_ctx(ctx));
        st = srv_engine_start(model, ctx, (int32_t)o->n_parallel, (int32_t)o->n_batch, &engine,
                              err);
    }
    api.engine = engine;
    int port = 0;
    srv_http_config hc = {.host = o->host, .port = (int)o->port, .api_key = o->api_key,
                          .max_body = (size_t)o->max_body,
                          .max_connections = (unsigned)o->max_connections,
                          .verbose = o->mc.verbose};
    if (st == MOE_OK)
        st = srv_http_start(&api, &hc, &http, &port, err);
    if (st == MOE_OK) {
        MOE_INFO("serving %s on http://%s:%d with %" PRId64 " slots of %" PRId32
                 " tokens%s", api.model_id, o->host, port, o->n_parallel,
                 srv_engine_slot_ctx(engine), o->api_key ? " (API key required)" : "");
        fflush(stderr);
        wait_and_drain(http, engine);
    }
    srv_http_stop(http);
    srv_engine_stop(engine);
    moe_context_free(ctx);
    moe_model_free(model);
    free(model_path);
    return st;
}

int main(int argc, char **argv) {
    server_opts o = {.mc = MOE_MODEL_CLI_INIT, .sc = moe_sampling_cli_init(),
                     .host = "127.0.0.1", .port = 8080, .n_parallel = 4, .n_batch = 512,
                     .n_predict = -1, .max_connections = 128, .max_body = 1u << 20};
    static const char summary[] =
        "Serves a GGUF MoE model over an OpenAI-compatible HTTP API, like llama-server:\n"
        "POST /v1/completions and /v1/chat/completions (\"stream\": true for server-sent\n"
        "events), GET /v1/models, /health and /metrics (Prometheus), POST /tokenize and\n"
        "/detokenize. -np slots each hold a sequence of the KV cache (-c cells shared, c/np\n"
        "positions each); every step decodes one token of each generating slot plus\n"
        "waiting prompt tokens in one batch. The sampling options are the defaults for\n"
        "requests that leave a field out. SIGINT/SIGTERM: finish the requests in flight\n"
        "and exit 0.";
    const moe_opt opts[] = {
        MOE_MODEL_CLI_OPTS(&o.mc),
        {.names = "c,ctx-size", .kind = MOE_OPT_INT, .dest = &o.mc.n_ctx, .arg_name = "N",
         .help = "KV cache cells shared by the slots, each gets N/np (default: 4096, or the "
                 "model's if smaller; 0: the model's training context)", .min = 0, .max = INT32_MAX},
        {.names = "np,parallel", .kind = MOE_OPT_INT, .dest = &o.n_parallel, .arg_name = "N",
         .help = "slots: requests generated at the same time (default 4)", .min = 1,
         .max = 256},
        {.names = "b,batch-size", .kind = MOE_OPT_INT, .dest = &o.n_batch, .arg_name = "N",
         .help = "most tokens one decode step takes (default 512)", .min = 1, .max = 65536},
        {.names = "n,predict,n-predict", .kind = MOE_OPT_INT, .dest = &o.n_predict,
         .arg_name = "N", .help = "max_tokens of requests that give none; -1 (default): until "
                                  "end of text or the slot's context is full",
         .min = -1, .max = INT32_MAX},
        MOE_SAMPLING_CLI_OPTS(&o.sc),
        {.names = "host", .kind = MOE_OPT_STRING, .dest = &o.host, .arg_name = "ADDR",
         .help = "address to listen on (default 127.0.0.1: this machine only)"},
        {.names = "port", .kind = MOE_OPT_INT, .dest = &o.port, .arg_name = "N",
         .help = "port (default 8080; 0: any free one, printed)", .min = 0, .max = 65535},
        {.names = "api-key", .kind = MOE_OPT_STRING, .dest = &o.api_key, .arg_name = "KEY",
         .help = "require \"Authorization: Bearer KEY\" (all but /health)"},
        {.names = "a,alias", .kind = MOE_OPT_STRING, .dest = &o.alias, .arg_name = "NAME",
         .help = "the model's name in the API (default: the file's name)"},
        {.names = "chat-template", .kind = MOE_OPT_STRING, .dest = &o.chat_template,
         .arg_name = "TMPL", .help = "chat template instead of the model's: a name (chatml, "
                                     "llama3, phi3...) or its text"},
        {.names = "max-body", .kind = MOE_OPT_SIZE, .dest = &o.max_body, .arg_name = "SIZE",
         .help = "largest request body; larger ones get 413 (default 1M)"},
        {.names = "max-connections", .kind = MOE_OPT_INT, .dest = &o.max_connections,
         .arg_name = "N", .help = "open connections at most (default 128)", .min = 1,
         .max = 65536},
        {0},
    };
    const moe_cli cli = {.prog = PROG, .synopsis = "-m MODEL [--host ADDR] [--port N] [options]",
                         .summary = summary, .opts = opts};
    moe_log_set_prog(PROG);
    moe_err err = {0};
    bool help = false;
    moe_status st = moe_model_cli_take_lora_scales(&argc, argv, &o.mc, &err);
    if (st == MOE_OK)
        st = moe_cli_parse(&cli, argc, argv, NULL, NULL, &help, &err);
    if (st == MOE_OK && !help && o.mc.place.list_devices) {
        moe_placement_cli_list(stdout);
        return 0;
    }
    if (st == MOE_OK && !help)
        st = moe_model_cli_check(&o.mc, &err);
    if (st == MOE_OK && !help)
        st = moe_sampling_cli_check(&o.sc, &err);
    if (st == MOE_OK && !help && o.max_body == 0)
        st = moe_fail(&err, MOE_ERR_USAGE, "option --max-body: must be > 0");
    int exit_code;
    if (moe_cli_parse_done(PROG, st, help, &err, &exit_code))
        return exit_code;
    if (o.mc.verbose)
        moe_log_set_level(MOE_LOG_DEBUG);
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-write is an error return, not death */
    st = serve(&o, &err);
    if (st == MOE_OK)
        MOE_INFO("stopped cleanly");
    return moe_cli_finish(PROG, st, &err);
}
