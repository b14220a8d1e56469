/* log(sum(exp(l))) of a row of V logits, in double (the test tools score rows with it). */
#ifndef DINFER_TESTS_TOOLS_LSE_H
#define DINFER_TESTS_TOOLS_LSE_H

#include <math.h>

static inline double row_lse(const float *l, int V)
{
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < V; i++)
        mx = l[i] > mx ? l[i] : mx;
    for (int i = 0; i < V; i++)
        s += exp(l[i] - mx);
    return mx + log(s);
}

#endif
