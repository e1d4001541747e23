/* moe-stats — expert usage statistics files (written by --expert-stats of
 * moe-run, moe-bench, moe-perplexity and moe-imatrix):
 *   moe-stats merge A.json B.json ... -o OUT.json   add files of one model
 *   moe-stats report FILE.json [--plot OUT.svg]     table per layer, heat map
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base/cli.h"
#include "formats/base/tempfile.h"
#include "runtime/quality/expert_stats.h"
#include "runtime/quality/outfile.h"

static void usage(FILE *f) {
    fputs("usage: moe-stats merge A.json B.json ... -o OUT.json\n"
          "       moe-stats report FILE.json [--plot OUT.svg]\n"
          "Files come from --expert-stats of moe-run / moe-bench / moe-perplexity / moe-imatrix.\n"
          "merge adds counts and weights of files of the same model (exactly);\n"
          "report prints per MoE layer and phase (prompt, gen): tokens, entropy of the\n"
          "routing distribution in bits (log2 E = perfectly even), share of routing\n"
          "taken by the top 10%% of experts, and experts never chosen; --plot writes a\n"
          "heat map layer x expert (colour: share of the layer's routing, prompt + gen).\n",
          f);
}

static moe_status cmd_merge(int argc, char **argv, moe_err *err) {
    const char *out_path = NULL;
    moe_expert_stats *sum = NULL;
    moe_status st = MOE_OK;
    int n_in = 0;
    for (int i = 0; i < argc && st == MOE_OK; i++) {
        if (!strcmp(argv[i], "-o")) {
            if (i + 1 >= argc)
                st = moe_fail(err, MOE_ERR_USAGE, "-o needs a file name");
            else
                out_path = argv[++i];
            continue;
        }
        moe_expert_stats *s = NULL;
        st = moe_expert_stats_load(argv[i], &s, err);
        if (st == MOE_OK && sum) {
            st = moe_expert_stats_merge(sum, s, err);
            if (st != MOE_OK)
                moe_err_prefix(err, "%s", argv[i]);
            moe_expert_stats_free(s);
        } else if (st == MOE_OK) {
            sum = s;
        }
        n_in++;
    }
    if (st == MOE_OK && (!out_path || n_in < 1))
        st = moe_fail(err, MOE_ERR_USAGE, "merge needs input files and -o OUT.json");
    if (st == MOE_OK)
        st = moe_expert_stats_save(sum, out_path, err);
    if (st == MOE_OK)
        printf("merged %d files into %s\n", n_in, out_path);
    moe_expert_stats_free(sum);
    return st;
}

static void print_report(const moe_expert_stats *s) {
    static const char *const name[] = {"prompt", "gen"};
    printf("model %s%s%s: %" PRId32 " experts, %" PRId32 " used per token, %" PRId32
           " MoE layers (even routing: entropy %.2f bits, top 10%% share %.1f%%)\n",
           s->model, s->arch ? ", arch " : "", s->arch ? s->arch : "", s->n_expert,
           s->n_expert_used, s->n_layers, log2((double)s->n_expert),
           100.0 * (double)((s->n_expert + 9) / 10) / s->n_expert);
    printf("%6s %-6s %10s %12s %10s %8s\n", "layer", "phase", "tokens", "entropy(b)",
           "top10%", "unused");
    double ent_sum[2] = {0}, top_sum[2] = {0};
    int64_t unused_sum[2] = {0}, n_with[2] = {0};
    for (int32_t i = 0; i < s->n_layers; i++)
        for (int p = 0; p < MOE_STATS_N_PHASES; p++) {
            const moe_expert_phase_stats *ph = &s->layers[i].phase[p];
            moe_expert_summary m = moe_expert_summarize(ph->count, s->n_expert);
            if (!m.total)
                continue;
            printf("%6" PRId32 " %-6s %10" PRIu64 " %12.3f %9.1f%% %8" PRId32 "\n",
                   s->layers[i].layer, name[p], ph->n_tokens, m.entropy_bits,
                   100.0 * m.top10_share, m.n_unused);
            ent_sum[p] += m.entropy_bits;
            top_sum[p] += m.top10_share;
            unused_sum[p] += m.n_unused;
            n_with[p]++;
        }
    for (int p = 0; p < MOE_STATS_N_PHASES; p++)
        if (n_with[p])
            printf("summary %-6s: %" PRId64 " layers, mean entropy %.3f bits, mean top 10%% "
                   "share %.1f%%, %" PRId64 " expert slots never used\n",
                   name[p], n_with[p], ent_sum[p] / n_with[p], 100.0 * top_sum[p] / n_with[p],
                   unused_sum[p]);
}

/* colour of share x in [0, 1] on a white -> yellow -> red -> dark purple ramp */
static void ramp(double x, char out[8]) {
    static const double stop[4][3] = {
        {255, 255, 255}, {253, 208, 60}, {220, 50, 32}, {60, 10, 80}};
    x = x < 0 ? 0 : x > 1 ? 1 : x;
    double f = x * 3;
    int i = f >= 3 ? 2 : (int)f;
    double t = f - i;
    int c[3];
    for (int k = 0; k < 3; k++)
        c[k] = (int)lround(stop[i][k] + t * (stop[i + 1][k] - stop[i][k]));
    snprintf(out, 8, "#%02x%02x%02x", c[0], c[1], c[2]);
}

/* The SVG text of the heat map into a growing buffer (open_memstream). */
static void svg_body(FILE *f, const moe_expert_stats *s) {
    const int E = s->n_expert, L = s->n_layers;
    const int cw = E <= 16 ? 24 : E <= 64 ? 12 : E <= 160 ? 6 : 4, ch = L <= 32 ? 16 : 8;
    const int left = 70, top = 50, grid_w = E * cw, grid_h = L * ch;
    const int width = left + grid_w + 120, height = top + grid_h + 60;
    double max_share = 0;
    for (int i = 0; i < L; i++) {
        uint64_t tot = 0;
        for (int e = 0; e < E; e++)
            tot += s->layers[i].phase[0].count[e] + s->layers[i].phase[1].count[e];
        for (int e = 0; e < E && tot; e++) {
            double sh = (double)(s->layers[i].phase[0].count[e] + s->layers[i].phase[1].count[e]) / tot;
            max_share = sh > max_share ? sh : max_share;
        }
    }
    if (max_share <= 0)
        max_share = 1;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n"
               "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n",
            width, height, width, height);
    fprintf(f, "<text x=\"%d\" y=\"20\" font-size=\"14\">expert usage: %" PRId32
               " experts, %" PRId32 " used per token (share of each layer's routing)</text>\n",
            left, E, s->n_expert_used);
    for (int i = 0; i < L; i++) {
        uint64_t tot = 0;
        for (int e = 0; e < E; e++)
            tot += s->layers[i].phase[0].count[e] + s->layers[i].phase[1].count[e];
        for (int e = 0; e < E; e++) {
            uint64_t c = s->layers[i].phase[0].count[e] + s->layers[i].phase[1].count[e];
            double sh = tot ? (double)c / tot : 0;
            char col[8];
            ramp(sh / max_share, col);
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\">"
                       "<title>layer %" PRId32 " expert %d: %.2f%%</title></rect>\n",
                    left + e * cw, top + i * ch, cw, ch, col, s->layers[i].layer, e, 100 * sh);
        }
        if (ch >= 12 || i % 4 == 0)
            fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%" PRId32 "</text>\n",
                    left - 4, top + i * ch + ch - 3, s->layers[i].layer);
    }
    int step = E <= 16 ? 1 : E <= 64 ? 8 : 16;
    for (int e = 0; e < E; e += step)
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d</text>\n",
                left + e * cw + cw / 2, top - 4, e);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">expert</text>\n",
            left + grid_w / 2, top + grid_h + 20);
    fprintf(f, "<text x=\"14\" y=\"%d\" transform=\"rotate(-90 14 %d)\" "
               "text-anchor=\"middle\">layer</text>\n",
            top + grid_h / 2, top + grid_h / 2);
    /* legend: a vertical bar from 0 (bottom) to the largest share (top) */
    const int lx = left + grid_w + 30, lh = grid_h < 100 ? 100 : grid_h, seg = 20;
    for (int k = 0; k < seg; k++) {
        char col[8];
        ramp(1.0 - (k + 0.5) / seg, col);
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"16\" height=\"%d\" fill=\"%s\"/>\n", lx,
                top + k * lh / seg, lh / seg + 1, col);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"16\" height=\"%d\" fill=\"none\" "
               "stroke=\"black\"/>\n", lx, top, lh);
    fprintf(f, "<text x=\"%d\" y=\"%d\">%.1f%%</text>\n", lx + 20, top + 10, 100 * max_share);
    fprintf(f, "<text x=\"%d\" y=\"%d\">0%%</text>\n", lx + 20, top + lh);
    fprintf(f, "<text x=\"%d\" y=\"%d\">share</text>\n", lx - 4, top - 8);
    fputs("</svg>\n", f);
}

static moe_status write_svg(const moe_expert_stats *s, const char *path, moe_err *err) {
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    MOE_FAIL_IF(!mem, err, MOE_ERR_NOMEM, "out of memory");
    svg_body(mem, s);
    fclose(mem);
    moe_outfile o;
    moe_status st = moe_outfile_open(&o, path, err);
    if (st == MOE_OK)
        st = moe_outfile_write(&o, buf, len, err);
    if (st == MOE_OK)
        st = moe_outfile_commit(&o, err);
    else
        moe_outfile_abort(&o);
    free(buf);
    return st;
}

static moe_status cmd_report(int argc, char **argv, moe_err *err) {
    const char *in = NULL, *plot = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--plot")) {
            MOE_FAIL_IF(i + 1 >= argc, err, MOE_ERR_USAGE, "--plot needs a file name");
            plot = argv[++i];
        } else {
            MOE_FAIL_IF(in, err, MOE_ERR_USAGE, "report takes one file (merge first)");
            in = argv[i];
        }
    }
    MOE_FAIL_IF(!in, err, MOE_ERR_USAGE, "report needs a FILE.json");
    MOE_FAIL_IF(plot && (strlen(plot) < 4 || strcmp(plot + strlen(plot) - 4, ".svg")), err,
                MOE_ERR_USAGE, "--plot %s: only .svg is written", plot);
    moe_expert_stats *s = NULL;
    MOE_TRY(moe_expert_stats_load(in, &s, err));
    print_report(s);
    moe_status st = plot ? write_svg(s, plot, err) : MOE_OK;
    if (st == MOE_OK && plot)
        printf("heat map written to %s\n", plot);
    moe_expert_stats_free(s);
    return st;
}

int main(int argc, char **argv) {
    moe_tempfile_install_handlers();
    moe_err err = {0};
    moe_status st;
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "merge"))
        st = cmd_merge(argc - 2, argv + 2, &err);
    else if (!strcmp(argv[1], "report"))
        st = cmd_report(argc - 2, argv + 2, &err);
    else
        st = moe_fail(&err, MOE_ERR_USAGE, "unknown command %s (merge, report)", argv[1]);
    if (st == MOE_ERR_USAGE && strstr(err.msg, "unknown command")) {
        fprintf(stderr, "moe-stats: %s\n", err.msg);
        usage(stderr);
        return moe_status_exit_code(st);
    }
    return moe_cli_finish("moe-stats", st, &err);
}
