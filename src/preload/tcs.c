/*
 * tcs.c - the thread cap of `moat run --config`: pthread_create fails with
 * EAGAIN when the program would have more live threads than
 * MOAT_THREADS_MAX, as it does in an enclave whose TCSs are all in use.
 *
 * pthread_create is interposed (exported by preload.map) and passes on to
 * the next definition, libc's, found with dlsym(RTLD_NEXT).  A thread counts
 * from the moment its creation is admitted until it ends: the start routine
 * is wrapped, and the destructor of a thread-specific key, which runs when
 * the routine returns, on pthread_exit and on cancellation, gives the slot
 * back before a pthread_join of the thread can return.  The main thread
 * counts as one.
 *
 * moat's own threads (fault handlers, reclaimer, purge, statistics
 * publisher) do not count, whenever they are started: a call made inside
 * moat (m_engine_internal, common/engine.h) or whose return address lies in
 * libmoat_preload.so itself is moat's.  The second test also holds where
 * the first is not set (the constructor, threads the engine starts lazily).
 *
 * Without MOAT_THREADS_MAX (or with 0) nothing is refused, but threads are
 * still counted so that the peak can be published (m_preload_tcs_stats).
 * After fork the child has one thread and starts counting again.
 *
 * Not seen: threads made by thrd_create (glibc calls its internal
 * pthread_create), by clone() directly, or by libraries linked statically
 * into the program; and in a sanitized program the sanitizer's interceptor
 * calls this function, so moat's threads count there too.
 */
#include "preload/tcs.h"

#include "common/engine.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TCS_EXPORT __attribute__((visibility("default")))
/* Code that runs in a new thread before ThreadSanitizer has set the thread
 * up (see tcs_trampoline) must carry no instrumentation at all:
 * no_sanitize("thread") still calls __tsan_func_entry. */
#if defined(__has_attribute) && __has_attribute(disable_sanitizer_instrumentation)
#define TCS_RAW __attribute__((disable_sanitizer_instrumentation))
#else
#define TCS_RAW __attribute__((no_sanitize("thread")))
#endif
/* Above this a cap is surely a typo; the tool's own maximum is 4096. */
#define TCS_MAX_CAP (1u << 20)

typedef int (*tcs_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

static struct {
    _Atomic(tcs_create_fn) next; /* libc's pthread_create */
    _Atomic uint64_t live;       /* the program's threads now, the main thread included */
    _Atomic uint64_t peak;
    uint64_t cap; /* MOAT_THREADS_MAX, 0 = none; constant after the constructor */
    pthread_key_t key;
    bool key_ok;
    void *self_base; /* where libmoat_preload.so is loaded */
} tcs = {.live = 1, .peak = 1};

static pthread_once_t tcs_once = PTHREAD_ONCE_INIT;

TCS_RAW static void tcs_thread_end(void *v)
{
    (void)v;
    atomic_fetch_sub_explicit(&tcs.live, 1, memory_order_acq_rel);
}

static void tcs_atfork_child(void)
{
    atomic_store(&tcs.live, 1);
    atomic_store(&tcs.peak, 1);
}

static void tcs_setup(void)
{
    const char *s = getenv("MOAT_THREADS_MAX");
    if (s && *s) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || *end || v > TCS_MAX_CAP)
            fprintf(stderr,
                    "moat: MOAT_THREADS_MAX='%s' is not a number of threads from 0 to %u; "
                    "threads are not capped\n",
                    s, TCS_MAX_CAP);
        else
            tcs.cap = v;
    }
    tcs.key_ok = pthread_key_create(&tcs.key, tcs_thread_end) == 0;
    Dl_info di;
    if (dladdr((void *)tcs_setup, &di))
        tcs.self_base = di.dli_fbase;
    pthread_atfork(NULL, NULL, tcs_atfork_child);
}

__attribute__((constructor)) static void tcs_start(void)
{
    pthread_once(&tcs_once, tcs_setup);
}

static tcs_create_fn tcs_next(void)
{
    tcs_create_fn f = atomic_load_explicit(&tcs.next, memory_order_acquire);
    if (!f) {
        void *p = dlsym(RTLD_NEXT, "pthread_create");
        memcpy(&f, &p, sizeof f); /* ISO C has no cast between object and function pointers */
        atomic_store_explicit(&tcs.next, f, memory_order_release);
    }
    return f;
}

/* A call from moat's own code: the caller's code is in this library. */
static bool tcs_from_moat(const void *ret)
{
    Dl_info di;
    return tcs.self_base && dladdr(ret, &di) && di.dli_fbase == tcs.self_base;
}

struct tcs_start_arg {
    void *(*fn)(void *);
    void *arg;
    struct tcs_start_arg *next; /* on tcs_done */
};

/* Start arguments the new threads are done with; the next pthread_create
 * frees them.  The trampoline cannot call free(): under ThreadSanitizer it
 * runs before the sanitizer's own start function has set the thread up
 * (the interceptor calls this pthread_create with its start function), so
 * it must not be instrumented nor call intercepted functions. */
static _Atomic(struct tcs_start_arg *) tcs_done;

static void tcs_free_done(void)
{
    struct tcs_start_arg *a = atomic_exchange_explicit(&tcs_done, NULL, memory_order_acquire);
    while (a) {
        struct tcs_start_arg *next = a->next;
        free(a);
        a = next;
    }
}

TCS_RAW static void *tcs_trampoline(void *p)
{
    struct tcs_start_arg *a = p;
    void *(*fn)(void *) = a->fn;
    void *arg = a->arg;
    /* A push only: taking the whole list with one exchange leaves no ABA. */
    struct tcs_start_arg *h = atomic_load_explicit(&tcs_done, memory_order_relaxed);
    do
        a->next = h;
    while (!atomic_compare_exchange_weak_explicit(&tcs_done, &h, a, memory_order_release,
                                                  memory_order_relaxed));
    if (!tcs.key_ok || pthread_setspecific(tcs.key, &tcs) != 0)
        atomic_fetch_sub_explicit(&tcs.live, 1, memory_order_acq_rel); /* cannot learn its end */
    return fn(arg);
}

/* Admit one more thread, or say EAGAIN. */
static int tcs_admit(void)
{
    uint64_t n = atomic_load_explicit(&tcs.live, memory_order_relaxed);
    do {
        if (tcs.cap && n >= tcs.cap)
            return EAGAIN;
    } while (!atomic_compare_exchange_weak_explicit(&tcs.live, &n, n + 1, memory_order_acq_rel,
                                                    memory_order_relaxed));
    uint64_t pk = atomic_load_explicit(&tcs.peak, memory_order_relaxed);
    while (pk < n + 1 && !atomic_compare_exchange_weak_explicit(
                             &tcs.peak, &pk, n + 1, memory_order_relaxed, memory_order_relaxed))
        ;
    return 0;
}

TCS_EXPORT int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *),
                              void *arg)
{
    const void *ret = __builtin_return_address(0);
    pthread_once(&tcs_once, tcs_setup);
    tcs_create_fn next = tcs_next();
    if (!next)
        return EAGAIN;
    if (m_engine_internal || tcs_from_moat(ret))
        return next(t, attr, fn, arg);
    tcs_free_done();
    int err = tcs_admit();
    if (err)
        return err;
    struct tcs_start_arg *a = malloc(sizeof *a);
    if (!a) {
        tcs_thread_end(NULL);
        return EAGAIN;
    }
    a->fn = fn;
    a->arg = arg;
    err = next(t, attr, tcs_trampoline, a);
    if (err) {
        free(a);
        tcs_thread_end(NULL);
    }
    return err;
}

void m_preload_tcs_stats(uint64_t *live, uint64_t *peak)
{
    if (live)
        *live = atomic_load_explicit(&tcs.live, memory_order_relaxed);
    if (peak)
        *peak = atomic_load_explicit(&tcs.peak, memory_order_relaxed);
}
