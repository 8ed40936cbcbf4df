/*
 * run_thrash.c - telling the user, while the program runs, that its budget
 * is far too small for it.
 *
 * A budget below what a program needs to make progress does not fail: every
 * page the program touches evicts one it is about to touch again, and the
 * program crawls (python3 starting under a 64K budget takes four minutes).
 * Without a word that looks like a hang.  `moat run` already reads the
 * program's stats block while it waits; this watches the same samples over
 * a sliding window (MOAT_THRASH_WINDOW seconds, default 10) and prints one
 * warning when, over the whole window, the program's threads spent at least
 * half of the wall time in faults and the budget turned over at least 20
 * times a second: page-ins at 20 x the budget's pages a second, so a page
 * stays resident 50 ms on average.  Heavy but useful paging is far from
 * that: the real programs of bench/programs.sh under budgets 3-13 times
 * below their working sets spend 80-90% of their time in faults but turn
 * their budgets over 1-2 times a second (a page stays ~0.7 s); python3
 * under 64K turns it over ~900 times a second.  So the warning means "raise
 * the budget", not "this is slow".  It names the budget, the share, the
 * rate and the peak committed memory so far (an upper bound on what the
 * program used), and the program keeps running:
 * stopping it is the user's call.
 */
#include "run.h"

#include "common/size.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THRASH_SHARE_PCT   50 /* % of wall time in faults, summed over threads */
#define THRASH_TURNOVER    20 /* page-ins a second, in budgets */
#define THRASH_WINDOW_SECS 10

void m_run_thrash_init(struct m_run_thrash *t)
{
    memset(t, 0, sizeof *t);
    t->window_ns = (uint64_t)THRASH_WINDOW_SECS * 1000000000ull;
    const char *w = getenv("MOAT_THRASH_WINDOW");
    if (w && *w) {
        char *end;
        unsigned long v = strtoul(w, &end, 10);
        if (!*end && v >= 1 && v <= 3600)
            t->window_ns = (uint64_t)v * 1000000000ull;
    }
}

bool m_run_thrash_check(struct m_run_thrash *t, const struct m_stats_block *b, FILE *out,
                        const char *prog)
{
    const struct moat_stats *s = &b->stats;
    if (t->warned || !s->budget_pages)
        return false;
    if (!t->have || b->elapsed_ns < t->elapsed_ns) {
        /* first sample, or a new image after exec: the window starts */
        t->have = true;
        t->elapsed_ns = b->elapsed_ns;
        t->fault_ns = s->fault_ns;
        t->pageins = s->faults_pagein;
        return false;
    }
    uint64_t wall = b->elapsed_ns - t->elapsed_ns;
    if (wall < t->window_ns)
        return false;
    uint64_t faults = s->fault_ns - t->fault_ns;
    uint64_t pageins = s->faults_pagein - t->pageins;
    double secs = (double)wall / 1e9;
    double share = (double)faults / (double)wall;
    double rate = (double)pageins / secs;
    if (share * 100 < THRASH_SHARE_PCT || rate < (double)s->budget_pages * THRASH_TURNOVER) {
        t->elapsed_ns = b->elapsed_ns; /* slide: next window from here */
        t->fault_ns = s->fault_ns;
        t->pageins = s->faults_pagein;
        return false;
    }
    char bud[32], peak[32];
    m_size_format(s->budget_pages * MOAT_PAGE_SIZE, bud, sizeof bud);
    m_size_format(s->peak_committed_pages * MOAT_PAGE_SIZE, peak, sizeof peak);
    fprintf(out,
            "moat run: warning: '%s' spent %.0f%% of the last %.0f s in page faults, paging "
            "in %.0f pages a second through its budget of %s (each page stays resident %.1f ms "
            "on average): the budget is far too small for it and it will barely make "
            "progress. It has committed up to %s so far; raise --budget towards that (moat "
            "run keeps waiting; Ctrl-C stops the program)\n",
            prog, share > 1 ? 100.0 : share * 100, secs, rate, bud,
            1000.0 * (double)s->budget_pages / rate, peak);
    fflush(out);
    t->warned = true;
    return true;
}
