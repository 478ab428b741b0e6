/* Vulkan backend: GPU time per shader (ELA_VK_PROFILE=1). A timestamp after every dispatch,
 * labelled with the bound shader; after each batch's fence the difference to the previous
 * timestamp is that dispatch's time (the barrier before it included, which is what the order of
 * the stream costs); the table goes to stderr when the device closes. Wall-clock benchmarks
 * include the host's recording and submission; this shows where the device's own time goes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk_backend.h"
#include "vk_shaders.h"

ela_status vk_profile_open(vk_ctx *ctx) {
    ctx->prof_bound = -1;
    const char *env = getenv("ELA_VK_PROFILE");
    if (!env || !*env || strcmp(env, "0") == 0)
        return ELA_OK;
    if (ctx->phys->timestamp_bits == 0 || ctx->phys->props.limits.timestampPeriod <= 0.0f) {
        fprintf(stderr, "ela vulkan: ELA_VK_PROFILE: %s has no timestamps on its compute queue; "
                "not profiling\n", ctx->phys->info.name);
        return ELA_OK;
    }
    ctx->prof_label = calloc(VK_PROFILE_QUERIES, sizeof *ctx->prof_label);
    ctx->prof_ms = calloc((size_t)vk_spirv_count, sizeof *ctx->prof_ms);
    ctx->prof_calls = calloc((size_t)vk_spirv_count, sizeof *ctx->prof_calls);
    if (!ctx->prof_label || !ctx->prof_ms || !ctx->prof_calls)
        return vk_fail(ELA_ERR_OOM, "vulkan: out of host memory for the profile");
    VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
    qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
    qi.queryCount = VK_PROFILE_QUERIES;
    VkResult r = vkf.CreateQueryPool(ctx->dev, &qi, NULL, &ctx->prof_pool);
    return r == VK_SUCCESS ? ELA_OK : vk_fail_result(r, "vkCreateQueryPool");
}

typedef struct {
    int shader;
    double ms;
} prof_row;

static int by_time(const void *a, const void *b) {
    double x = ((const prof_row *)a)->ms, y = ((const prof_row *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

void vk_profile_close(vk_ctx *ctx) {
    if (ctx->prof_pool) {
        prof_row *rows = calloc((size_t)vk_spirv_count, sizeof *rows);
        int n = 0;
        double total = ctx->prof_other_ms;
        for (int i = 0; rows && i < vk_spirv_count; i++)
            if (ctx->prof_calls[i] > 0) {
                rows[n].shader = i;
                rows[n++].ms = ctx->prof_ms[i];
                total += ctx->prof_ms[i];
            }
        if (rows) {
            qsort(rows, (size_t)n, sizeof *rows, by_time);
            fprintf(stderr, "ela vulkan profile (%s): GPU time per shader\n%-28s %10s %12s %10s "
                    "%7s\n", ctx->phys->info.name, "shader", "dispatches", "total ms", "mean us",
                    "share");
            for (int i = 0; i < n; i++) {
                uint64_t c = ctx->prof_calls[rows[i].shader];
                fprintf(stderr, "%-28s %10llu %12.3f %10.2f %6.1f%%\n",
                        vk_spirv_table[rows[i].shader].name, (unsigned long long)c, rows[i].ms,
                        1e3 * rows[i].ms / (double)c, total > 0 ? 100.0 * rows[i].ms / total : 0.0);
            }
            fprintf(stderr, "%-28s %10s %12.3f\n", "(buffer copies)", "",
                    ctx->prof_other_ms);
        }
        free(rows);
        vkf.DestroyQueryPool(ctx->dev, ctx->prof_pool, NULL);
        ctx->prof_pool = VK_NULL_HANDLE;
    }
    free(ctx->prof_label);
    free(ctx->prof_ms);
    free(ctx->prof_calls);
    ctx->prof_label = NULL;
    ctx->prof_ms = NULL;
    ctx->prof_calls = NULL;
}

void vk_profile_batch_begin(vk_ctx *ctx) {
    ctx->prof_used = 0;
    if (!ctx->prof_pool)
        return;
    vkf.CmdResetQueryPool(ctx->cmd, ctx->prof_pool, 0, VK_PROFILE_QUERIES);
    vkf.CmdWriteTimestamp(ctx->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, ctx->prof_pool, 0);
    ctx->prof_label[0] = -1;
    ctx->prof_used = 1;
}

void vk_bind_pipeline(vk_ctx *ctx, VkPipeline pipe) {
    vkf.CmdBindPipeline(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
    if (!ctx->prof_pool)
        return;
    ctx->prof_bound = -1;
    for (int i = 0; i < ctx->n_pipes; i++)
        if (ctx->pipes[i].pipeline == pipe)
            ctx->prof_bound = ctx->pipes[i].shader;
}

static void mark(vk_ctx *ctx, int label) {
    if (!ctx->prof_pool || ctx->prof_used == 0 || ctx->prof_used >= VK_PROFILE_QUERIES)
        return;
    vkf.CmdWriteTimestamp(ctx->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, ctx->prof_pool,
                          ctx->prof_used);
    ctx->prof_label[ctx->prof_used++] = label;
}

void vk_profile_mark(vk_ctx *ctx) { mark(ctx, ctx->prof_bound); }

void vk_profile_mark_copy(vk_ctx *ctx) { mark(ctx, -1); }

void vk_profile_collect(vk_ctx *ctx) {
    uint32_t n = ctx->prof_used;
    ctx->prof_used = 0;
    if (!ctx->prof_pool || n < 2)
        return;
    uint64_t *t = malloc(sizeof *t * n);
    if (!t || vkf.GetQueryPoolResults(ctx->dev, ctx->prof_pool, 0, n, sizeof *t * n, t, sizeof *t,
                                      VK_QUERY_RESULT_64_BIT) != VK_SUCCESS) {
        free(t);
        return;
    }
    const uint64_t mask = ctx->phys->timestamp_bits >= 64 ? ~0ull
                                                         : (1ull << ctx->phys->timestamp_bits) - 1;
    const double ms_per_tick = (double)ctx->phys->props.limits.timestampPeriod * 1e-6;
    for (uint32_t i = 1; i < n; i++) {
        double ms = (double)((t[i] - t[i - 1]) & mask) * ms_per_tick;
        int s = ctx->prof_label[i];
        if (s < 0) {
            ctx->prof_other_ms += ms;
            continue;
        }
        ctx->prof_ms[s] += ms;
        ctx->prof_calls[s]++;
    }
    free(t);
}
