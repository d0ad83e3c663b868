/*
 * C twin of benchmarks/ggml_raw.py: the same ggml call sequence without Python, to show the
 * ctypes layer adds nothing measurable to the baseline.
 *
 * Build and run (libggml-python's generic wheel layout; use lib/ for a native build):
 *   D=$(python -c 'import libggml,os;print(os.path.dirname(libggml.__file__))')
 *   cc -O2 -o /tmp/ggml_raw benchmarks/ggml_raw.c -I$D/include -L$D/lib64 \
 *      -lggml -lggml-base -lggml-cpu -Wl,-rpath,$D/lib64
 *   /tmp/ggml_raw [threads]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

/* GFLOP/s of mul_mat(W[k, m] of wtype, X[k, n] f32) on the CPU backend. */
static double run_case(int64_t k, int64_t m, int64_t n, enum ggml_type wtype, int threads,
                       int reps, int warmup) {
    float * w32 = malloc(sizeof(float) * (size_t) (k * m));
    float * x32 = malloc(sizeof(float) * (size_t) (k * n));
    srand(1);
    for (int64_t i = 0; i < k * m; i++) w32[i] = (float) rand() / (float) RAND_MAX - 0.5f;
    for (int64_t i = 0; i < k * n; i++) x32[i] = (float) rand() / (float) RAND_MAX - 0.5f;

    size_t wsize = ggml_row_size(wtype, k) * (size_t) m;
    void * wdata = w32;
    if (wtype != GGML_TYPE_F32) {
        wdata = malloc(wsize);
        ggml_quantize_chunk(wtype, w32, wdata, 0, m, k, NULL);
    }

    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    ggml_backend_t backend = ggml_backend_dev_init(dev, NULL);
    ggml_backend_cpu_set_n_threads(backend, threads);

    size_t overhead = ggml_tensor_overhead();
    struct ggml_init_params pw = { overhead * 2, NULL, true };
    struct ggml_context * ctx_w = ggml_init(pw);
    struct ggml_tensor * w = ggml_new_tensor_2d(ctx_w, wtype, k, m);
    struct ggml_tensor * x = ggml_new_tensor_2d(ctx_w, GGML_TYPE_F32, k, n);
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx_w, backend);
    ggml_backend_tensor_set(w, wdata, 0, wsize);
    ggml_backend_tensor_set(x, x32, 0, sizeof(float) * (size_t) (k * n));

    struct ggml_init_params pg = { overhead * 8 + ggml_graph_overhead_custom(8, false), NULL, true };
    struct ggml_context * ctx_g = ggml_init(pg);
    struct ggml_tensor * out = ggml_mul_mat(ctx_g, w, x);
    struct ggml_cgraph * graph = ggml_new_graph_custom(ctx_g, 8, false);
    ggml_build_forward_expand(graph, out);
    ggml_gallocr_t galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend));
    ggml_gallocr_alloc_graph(galloc, graph);

    for (int i = 0; i < warmup; i++) ggml_backend_graph_compute(backend, graph);
    double t0 = now_s();
    for (int i = 0; i < reps; i++) ggml_backend_graph_compute(backend, graph);
    double per_run = (now_s() - t0) / reps;

    ggml_gallocr_free(galloc);
    ggml_free(ctx_g);
    ggml_backend_buffer_free(buf);
    ggml_free(ctx_w);
    ggml_backend_free(backend);
    if (wdata != w32) free(wdata);
    free(w32);
    free(x32);
    return 2.0 * (double) k * (double) m * (double) n / per_run / 1e9;
}

int main(int argc, char ** argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    printf("ggml %s (%s), threads=%d\n", ggml_version(), ggml_commit(), threads);
    printf("matmul 1024^3 f32  %8.2f GFLOP/s\n", run_case(1024, 1024, 1024, GGML_TYPE_F32, threads, 10, 2));
    printf("matvec 4096 f32    %8.2f GFLOP/s\n", run_case(4096, 4096, 1, GGML_TYPE_F32, threads, 100, 2));
    printf("matvec 4096 f16    %8.2f GFLOP/s\n", run_case(4096, 4096, 1, GGML_TYPE_F16, threads, 100, 2));
    printf("matvec 4096 q8_0   %8.2f GFLOP/s\n", run_case(4096, 4096, 1, GGML_TYPE_Q8_0, threads, 100, 2));
    return 0;
}
