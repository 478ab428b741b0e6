/* Self-test of the float64 references in tests/ref/: a hand-computed case and invariants
 * (one key gives V, identical keys give the mean of V, probabilities from one-hot V sum to 1
 * and agree with LSE, GQA head mapping, causal prefix = non-causal on the prefix). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/attn_dense_ref.h"
#include "test_common.h"

static int near(double a, double b) { return fabs(a - b) <= 1e-12 * (1.0 + fabs(b)); }
#define NEAR(a, b) near((a), (b))

static double *alloc_rand(test_rng *rng, int64_t n) {
    double *x = malloc((size_t)n * sizeof *x);
    if (x)
        for (int64_t i = 0; i < n; i++)
            x[i] = test_rng_uniform(rng, -2.0, 2.0);
    return x;
}

static void test_hand_case(void) {
    const double q[2] = {1, 0}, k[4] = {1, 0, 0, 1}, v[4] = {1, 2, 3, 4};
    double o[2], lse;
    ref_attn_dense_shape s = {.L = 1, .n = 2, .d = 2, .hq = 1, .hkv = 1, .causal = 0, .scale = 1};
    CHECK(ref_attn_dense(&s, q, k, v, o, &lse) == 0);
    const double e = exp(1.0);
    CHECKF(NEAR(o[0], (e * 1 + 3) / (e + 1)), "o[0] = %.17g", o[0]);
    CHECKF(NEAR(o[1], (e * 2 + 4) / (e + 1)), "o[1] = %.17g", o[1]);
    CHECKF(NEAR(lse, log(e + 1)), "lse = %.17g", lse);
    /* causal, q_pos0 = 0: row 0 sees key 0 only */
    s.causal = 1;
    CHECK(ref_attn_dense(&s, q, k, v, o, &lse) == 0);
    CHECK(NEAR(o[0], 1) && NEAR(o[1], 2) && NEAR(lse, 1.0));
    /* scale 0 means 1/sqrt(d) */
    s.causal = 0;
    s.scale = 0;
    CHECK(ref_attn_dense(&s, q, k, v, o, &lse) == 0);
    const double w = exp(1 / sqrt(2.0));
    CHECK(NEAR(o[0], (w * 1 + 3) / (w + 1)) && NEAR(lse, log(w + 1)));
    /* invalid shapes are refused */
    ref_attn_dense_shape bad = {.L = 1, .n = 2, .d = 2, .hq = 3, .hkv = 2};
    CHECK(ref_attn_dense(&bad, q, k, v, o, &lse) == -1);
}

static void test_invariants(void) {
    test_rng rng;
    test_rng_init(&rng, 1);
    const int64_t L = 5, n = 9, d = 16;
    const int hq = 4, hkv = 2;
    double *q = alloc_rand(&rng, L * hq * d), *k = alloc_rand(&rng, hkv * n * d);
    double *v = alloc_rand(&rng, hkv * n * d);
    double *o = malloc(sizeof(double) * (size_t)(L * hq * d)), *lse = malloc(sizeof(double) * (size_t)(L * hq));
    double *o2 = malloc(sizeof(double) * (size_t)(L * hq * d)), *lse2 = malloc(sizeof(double) * (size_t)(L * hq));
    if (!q || !k || !v || !o || !lse || !o2 || !lse2) {
        CHECK(!"out of memory");
        goto done;
    }
    ref_attn_dense_shape s = {.L = L, .n = n, .d = d, .hq = hq, .hkv = hkv, .causal = 0};

    /* One key: o = v, lse = scale * q.k. */
    {
        ref_attn_dense_shape s1 = s;
        s1.n = 1;
        double *k1 = malloc(sizeof(double) * (size_t)(hkv * d)), *v1 = malloc(sizeof(double) * (size_t)(hkv * d));
        for (int g = 0; k1 && v1 && g < hkv; g++)
            for (int64_t c = 0; c < d; c++) {
                k1[g * d + c] = k[g * n * d + c];
                v1[g * d + c] = v[g * n * d + c];
            }
        CHECK(k1 && v1 && ref_attn_dense(&s1, q, k1, v1, o, lse) == 0);
        int ok = 1;
        for (int64_t i = 0; k1 && v1 && i < L; i++)
            for (int h = 0; h < hq; h++) {
                int g = h / (hq / hkv);
                double dot = 0;
                for (int64_t c = 0; c < d; c++) {
                    ok &= NEAR(o[(i * hq + h) * d + c], v1[g * d + c]);
                    dot += q[(i * hq + h) * d + c] * k1[g * d + c];
                }
                ok &= NEAR(lse[i * hq + h], dot / sqrt((double)d));
            }
        CHECK(ok);
        free(k1);
        free(v1);
    }

    /* Identical keys: o = mean of V rows, lse = s + log(n). */
    {
        double *kc = malloc(sizeof(double) * (size_t)(hkv * n * d));
        for (int g = 0; kc && g < hkv; g++)
            for (int64_t j = 0; j < n; j++)
                memcpy(kc + (g * n + j) * d, k + g * n * d, sizeof(double) * (size_t)d);
        CHECK(kc && ref_attn_dense(&s, q, kc, v, o, lse) == 0);
        int ok = 1;
        for (int64_t i = 0; kc && i < L; i++)
            for (int h = 0; h < hq; h++) {
                int g = h / (hq / hkv);
                double dot = 0;
                for (int64_t c = 0; c < d; c++) {
                    double mean = 0;
                    for (int64_t j = 0; j < n; j++)
                        mean += v[(g * n + j) * d + c];
                    ok &= NEAR(o[(i * hq + h) * d + c], mean / (double)n);
                    dot += q[(i * hq + h) * d + c] * kc[g * n * d + c];
                }
                ok &= NEAR(lse[i * hq + h], dot / sqrt((double)d) + log((double)n));
            }
        CHECK(ok);
        free(kc);
    }

    /* One-hot V (d >= n): o is the probability row; it sums to 1 and p_j = exp(s_j - lse). */
    {
        double *vh = calloc((size_t)(hkv * n * d), sizeof(double));
        for (int g = 0; vh && g < hkv; g++)
            for (int64_t j = 0; j < n; j++)
                vh[(g * n + j) * d + j] = 1.0;
        ref_attn_dense_shape sc = s;
        sc.causal = 1;
        sc.q_pos0 = 2;
        CHECK(vh && ref_attn_dense(&sc, q, k, vh, o, lse) == 0);
        int ok = 1;
        for (int64_t i = 0; vh && i < L; i++)
            for (int h = 0; h < hq; h++) {
                int g = h / (hq / hkv);
                double sum = 0;
                for (int64_t j = 0; j < n; j++) {
                    double p = o[(i * hq + h) * d + j];
                    sum += p;
                    double dot = 0;
                    for (int64_t c = 0; c < d; c++)
                        dot += q[(i * hq + h) * d + c] * k[(g * n + j) * d + c];
                    double want = j <= sc.q_pos0 + i ? exp(dot / sqrt((double)d) - lse[i * hq + h]) : 0.0;
                    ok &= NEAR(p, want);
                }
                ok &= NEAR(sum, 1.0);
            }
        CHECK(ok);
        free(vh);
    }

    /* GQA: V constant per KV head g (value g + 1) gives o = g + 1 for every head h with h/G = g. */
    {
        double *vg = malloc(sizeof(double) * (size_t)(hkv * n * d));
        for (int g = 0; vg && g < hkv; g++)
            for (int64_t x = 0; x < n * d; x++)
                vg[g * n * d + x] = g + 1;
        CHECK(vg && ref_attn_dense(&s, q, k, vg, o, NULL) == 0);
        int ok = 1;
        for (int64_t i = 0; vg && i < L; i++)
            for (int h = 0; h < hq; h++)
                for (int64_t c = 0; c < d; c++)
                    ok &= NEAR(o[(i * hq + h) * d + c], h / (hq / hkv) + 1.0);
        CHECK(ok);
        free(vg);
    }

    /* Causal with q_pos0: row i equals non-causal attention over the first q_pos0 + i + 1 keys;
     * q_pos0 >= n - 1 equals non-causal; non-causal ignores q_pos0. */
    {
        ref_attn_dense_shape sc = s;
        sc.causal = 1;
        sc.q_pos0 = 3;
        CHECK(ref_attn_dense(&sc, q, k, v, o, lse) == 0);
        int ok = 1;
        for (int64_t i = 0; i < L; i++) {
            int64_t vis = sc.q_pos0 + i + 1 < n ? sc.q_pos0 + i + 1 : n;
            double *kp = malloc(sizeof(double) * (size_t)(hkv * vis * d)), *vp = malloc(sizeof(double) * (size_t)(hkv * vis * d));
            for (int g = 0; kp && vp && g < hkv; g++) {
                memcpy(kp + g * vis * d, k + g * n * d, sizeof(double) * (size_t)(vis * d));
                memcpy(vp + g * vis * d, v + g * n * d, sizeof(double) * (size_t)(vis * d));
            }
            ref_attn_dense_shape sp = {.L = 1, .n = vis, .d = d, .hq = hq, .hkv = hkv, .causal = 0};
            ok &= kp && vp && ref_attn_dense(&sp, q + i * hq * d, kp, vp, o2, lse2) == 0;
            for (int64_t x = 0; kp && vp && x < hq * d; x++)
                ok &= NEAR(o2[x], o[i * hq * d + x]);
            for (int h = 0; kp && vp && h < hq; h++)
                ok &= NEAR(lse2[h], lse[i * hq + h]);
            free(kp);
            free(vp);
        }
        CHECK(ok);

        sc.q_pos0 = n - 1;
        CHECK(ref_attn_dense(&sc, q, k, v, o, lse) == 0);
        ref_attn_dense_shape sn = s;
        sn.q_pos0 = 7; /* ignored */
        CHECK(ref_attn_dense(&sn, q, k, v, o2, lse2) == 0);
        ok = 1;
        for (int64_t x = 0; x < L * hq * d; x++)
            ok &= NEAR(o[x], o2[x]);
        for (int64_t x = 0; x < L * hq; x++)
            ok &= NEAR(lse[x], lse2[x]);
        CHECK(ok);
    }
done:
    free(q);
    free(k);
    free(v);
    free(o);
    free(lse);
    free(o2);
    free(lse2);
}

int main(void) {
    test_hand_case();
    test_invariants();
    return test_summary("test_ref");
}
