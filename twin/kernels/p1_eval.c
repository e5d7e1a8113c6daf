/* Fused CPU kernels of the P1 single-cell evaluation (twin/kernels/__init__.py compiles and
 * loads this file with the system C compiler; twin/signal.py falls back to torch without it).
 * No torch headers: the caller passes raw pointers of contiguous tensors. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* Bumped whenever a signature changes: the loader refuses a library with another value. */
int ristwin_p1_abi(void) { return 2; }

/* p1_eval splits a batch over threads only in slices of at least this many environments
 * (~30 us of work, about the cost of starting a thread). */
#define MIN_ENVS_PER_THREAD 128
#define MAX_THREADS 64

typedef float ristwin_vf4 __attribute__((vector_size(4 * sizeof(float))));
typedef double ristwin_vd4 __attribute__((vector_size(4 * sizeof(double))));

#define REAL float
#define VEC4 ristwin_vf4
#define SFX c64
#define LOG2 log2f
#include "p1_eval_impl.h"
#undef REAL
#undef VEC4
#undef SFX
#undef LOG2

#define REAL double
#define VEC4 ristwin_vd4
#define SFX c128
#define LOG2 log2
#include "p1_eval_impl.h"
#undef REAL
#undef VEC4
#undef SFX
#undef LOG2
