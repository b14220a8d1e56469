/* Rendering: the syntax tree walked with jinja2's scoping. A for loop's body is a new scope at
 * every iteration (a `set` inside it is gone at the next one: hence namespace()); `if` is no
 * scope; a macro runs in a scope of its own whose parent is the template's top level, as it is
 * when the macro is called. Names not found anywhere are undefined: they print as nothing and are
 * false, and fail only when used as a value (arithmetic, attributes, calls). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/text/jinja_impl.h"

#define MAX_MACRO_DEPTH 64

enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE };

void jx_fail(jctx *c, int line, const char *fmt, ...)
{
    char msg[BASE_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        base_errf(c->err, "line %d: %s", line, msg);
    else
        base_errf(c->err, "%s", msg);
    longjmp(c->fail, 1);
}

void *jx_alloc(jctx *c, size_t n)
{
    void *p = jarena_alloc(&c->arena, n);
    if (!p)
        jx_fail(c, 0, "rendering the template needs more than %zu MiB", c->lim->max_memory >> 20);
    return p;
}

static void step(jctx *c, int line)
{
    if (++c->steps > c->lim->max_steps)
        jx_fail(c, line, "rendering the template takes more than %llu steps", (unsigned long long)c->lim->max_steps);
}

/* ---- output ---- */

static void out_put(jctx *c, int line, const char *s, size_t n)
{
    if (c->out_len + n > c->lim->max_output)
        jx_fail(c, line, "the rendered text is over %zu bytes", c->lim->max_output);
    if (c->out_len + n + 1 > c->out_cap) {
        size_t cap = c->out_cap ? 2 * c->out_cap : 4096;
        while (cap < c->out_len + n + 1)
            cap *= 2;
        char *o = realloc(c->out, cap);
        if (!o)
            jx_fail(c, line, "out of memory");
        c->out = o, c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
    c->out[c->out_len] = '\0';
}

/* ---- scopes ---- */

static jframe *frame_new(jctx *c, jframe *parent)
{
    jframe *f = jx_alloc(c, sizeof *f);
    memset(f, 0, sizeof *f);
    f->parent = parent;
    return f;
}

static void frame_set(jctx *c, jframe *f, const char *name, jv v)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->names[i], name) == 0) {
            f->vals[i] = v;
            return;
        }
    if (f->n == f->cap) {
        const size_t cap = f->cap ? 2 * f->cap : 8;
        const char **names = jx_alloc(c, cap * sizeof *names);
        jv *vals = jx_alloc(c, cap * sizeof *vals);
        if (f->n) {
            memcpy(names, f->names, f->n * sizeof *names);
            memcpy(vals, f->vals, f->n * sizeof *vals);
        }
        f->names = names, f->vals = vals, f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n++] = v;
}

static jv lookup(jctx *c, jframe *f, const char *name)
{
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (strcmp(f->names[i], name) == 0)
                return f->vals[i];
    const jv g = jx_global(name);
    if (g.t != JV_UNDEF)
        return g;
    return jx_undef(c, "'%s' is undefined", name);
}

/* ---- expressions ---- */

static jv eval(jctx *c, const jnode *n, jframe *f);

static void eval_args(jctx *c, const jnode *n, jframe *f, jv **args, jv **kw)
{
    *args = n->n_kids ? jx_alloc(c, n->n_kids * sizeof **args) : NULL;
    *kw = n->n_kw ? jx_alloc(c, n->n_kw * sizeof **kw) : NULL;
    for (size_t i = 0; i < n->n_kids; i++)
        (*args)[i] = eval(c, n->kids[i], f);
    for (size_t i = 0; i < n->n_kw; i++)
        (*kw)[i] = eval(c, n->kw_vals[i], f);
}

static jv call(jctx *c, const jnode *n, jframe *f)
{
    jv *args, *kw;
    if (n->a->kind == JN_GETATTR) { /* obj.method(...) */
        const jv obj = eval(c, n->a->a, f);
        if (obj.t == JV_UNDEF)
            jx_fail_undef(c, n->line, obj);
        eval_args(c, n, f, &args, &kw);
        bool found = false;
        const jv r = jx_call_method(c, n->line, obj, n->a->name, args, n->n_kids, n->kw_names, kw, n->n_kw, &found);
        if (found)
            return r;
        const jv callee = jx_getattr(c, n->line, obj, n->a->name);
        if (callee.t == JV_MACRO)
            return jx_call_macro(c, n->line, callee.u.macro, args, n->n_kids, n->kw_names, kw, n->n_kw);
        if (callee.t == JV_UNDEF)
            jx_fail(c, n->line, "'%s object' has no attribute '%s'", jx_type_name(obj), n->a->name);
        jx_fail(c, n->line, "'%s' object is not callable", jx_type_name(callee));
    }
    const jv callee = eval(c, n->a, f);
    eval_args(c, n, f, &args, &kw);
    if (callee.t == JV_MACRO)
        return jx_call_macro(c, n->line, callee.u.macro, args, n->n_kids, n->kw_names, kw, n->n_kw);
    if (callee.t == JV_FUNC)
        return jx_call_func(c, n->line, callee.u.fn, args, n->n_kids, n->kw_names, kw, n->n_kw);
    if (callee.t == JV_UNDEF)
        jx_fail_undef(c, n->line, callee);
    jx_fail(c, n->line, "'%s' object is not callable", jx_type_name(callee));
}

static jv eval(jctx *c, const jnode *n, jframe *f)
{
    step(c, n->line);
    switch (n->kind) {
    case JN_CONST: return n->val;
    case JN_NAME: return lookup(c, f, n->name);
    case JN_LIST:
    case JN_TUPLE: {
        jlist *l = jx_list_new(c, n->n_kids);
        for (size_t i = 0; i < n->n_kids; i++)
            l->v[i] = eval(c, n->kids[i], f);
        return jv_of_list(l, n->kind == JN_TUPLE);
    }
    case JN_DICT: {
        jdict *d = jx_dict_new(c, n->n_kids / 2);
        for (size_t i = 0; i + 1 < n->n_kids; i += 2) {
            const jv k = eval(c, n->kids[i], f);
            if (k.t == JV_LIST || k.t == JV_DICT || k.t == JV_UNDEF)
                jx_fail(c, n->line, "unhashable type: '%s'", jx_type_name(k));
            jx_dict_set(c, d, k, eval(c, n->kids[i + 1], f));
        }
        return jv_of_dict(d);
    }
    case JN_GETATTR: return jx_getattr(c, n->line, eval(c, n->a, f), n->name);
    case JN_GETITEM: {
        const jv obj = eval(c, n->a, f);
        return jx_getitem(c, n->line, obj, eval(c, n->b, f));
    }
    case JN_SLICE: {
        const jv obj = eval(c, n->a, f);
        const jv a = n->b ? eval(c, n->b, f) : jv_none(), b = n->c ? eval(c, n->c, f) : jv_none();
        return jx_slice(c, n->line, obj, a, b, n->d ? eval(c, n->d, f) : jv_none());
    }
    case JN_CALL: return call(c, n, f);
    case JN_FILTER: {
        const jv in = eval(c, n->a, f);
        jv *args, *kw;
        eval_args(c, n, f, &args, &kw);
        return jx_filter(c, n->line, n->filter_id, in, args, n->n_kids, n->kw_names, kw, n->n_kw);
    }
    case JN_TEST: {
        const jv in = eval(c, n->a, f);
        jv *args, *kw;
        eval_args(c, n, f, &args, &kw);
        return jv_bool(jx_test(c, n->line, n->test_id, in, args, n->n_kids));
    }
    case JN_NOT: return jv_bool(!jx_truthy(eval(c, n->a, f)));
    case JN_NEG:
    case JN_POS: return jx_unary(c, n->line, n->kind == JN_NEG ? '-' : '+', eval(c, n->a, f));
    case JN_AND: {
        const jv a = eval(c, n->a, f);
        return jx_truthy(a) ? eval(c, n->b, f) : a;
    }
    case JN_OR: {
        const jv a = eval(c, n->a, f);
        return jx_truthy(a) ? a : eval(c, n->b, f);
    }
    case JN_BINOP: {
        const jv a = eval(c, n->a, f);
        return jx_arith(c, n->line, n->op, a, eval(c, n->b, f));
    }
    case JN_COMPARE: {
        jv a = eval(c, n->a, f);
        for (size_t i = 0; i < n->n_kids; i++) {
            const jv b = eval(c, n->kids[i], f);
            if (!jx_compare(c, n->line, n->ops[i], a, b))
                return jv_bool(false);
            a = b;
        }
        return jv_bool(true);
    }
    case JN_COND:
        if (jx_truthy(eval(c, n->a, f)))
            return eval(c, n->b, f);
        return n->c ? eval(c, n->c, f) : jx_undef(c, "the conditional expression has no else branch");
    default: jx_fail(c, n->line, "not an expression");
    }
}

/* ---- statements ---- */

static int exec_body(jctx *c, jnode *const *kids, size_t n, jframe *f);

static void assign(jctx *c, int line, const jnode *target, jv v, jframe *f)
{
    if (target->kind == JN_NAME) {
        frame_set(c, f, target->name, v);
    } else if (target->kind == JN_NSREF) {
        const jv ns = lookup(c, f, target->name);
        if (ns.t != JV_NS)
            jx_fail(c, line, "cannot assign attribute on non-namespace object '%s'", target->name);
        jx_dict_set(c, ns.u.d, jv_of_str(jx_str_new(c, target->name2, strlen(target->name2))), v);
    } else { /* a tuple */
        if (v.t == JV_DICT) { /* unpacking a dict takes its keys, as Python does */
            jlist *l = jx_list_new(c, v.u.d->n);
            for (size_t i = 0; i < l->n; i++)
                l->v[i] = v.u.d->k[i];
            v = jv_of_list(l, true);
        }
        if (v.t != JV_LIST)
            jx_fail(c, line, "cannot unpack a non-iterable %s object", jx_type_name(v));
        if (v.u.l->n != target->n_kids)
            jx_fail(c, line, "%s values to unpack (expected %zu, got %zu)",
                    v.u.l->n > target->n_kids ? "too many" : "not enough", target->n_kids, v.u.l->n);
        for (size_t i = 0; i < target->n_kids; i++)
            assign(c, line, target->kids[i], v.u.l->v[i], f);
    }
}

static void exec_for(jctx *c, const jnode *n, jframe *f)
{
    const jlist *all = jx_iter(c, n->line, eval(c, n->b, f));
    const jlist *items = all;
    if (n->c) { /* the `if` filter comes first: loop.length and loop.index count what passes */
        jlist *kept = jx_list_new(c, all->n);
        kept->n = 0;
        jframe *g = frame_new(c, f);
        for (size_t i = 0; i < all->n; i++) {
            g->n = 0;
            assign(c, n->line, n->a, all->v[i], g);
            if (jx_truthy(eval(c, n->c, g)))
                kept->v[kept->n++] = all->v[i];
        }
        items = kept;
    }
    jloop *loop = jx_alloc(c, sizeof *loop);
    loop->items = items;
    /* one scope, emptied at each iteration (nothing keeps a pointer to a scope past its use) */
    jframe *g = frame_new(c, f);
    for (size_t i = 0; i < items->n; i++) {
        step(c, n->line); /* an empty body still costs its iterations */
        loop->i = i;
        g->n = 0;
        frame_set(c, g, "loop", (jv){.t = JV_LOOP, .u.loop = loop});
        assign(c, n->line, n->a, items->v[i], g);
        if (exec_body(c, n->kids, n->n_kids, g) == FLOW_BREAK)
            break;
    }
    if (!items->n)
        exec_body(c, n->else_kids, n->n_else, frame_new(c, f));
}

/* Runs a body, returning what it printed (taken back off the output). */
static jstr *capture(jctx *c, jnode *const *kids, size_t n, jframe *f)
{
    const size_t mark = c->out_len;
    exec_body(c, kids, n, f);
    jstr *s = jx_str_new(c, c->out ? c->out + mark : "", c->out_len - mark);
    c->out_len = mark;
    if (c->out)
        c->out[mark] = '\0'; /* what follows, or the end, writes from here */
    return s;
}

static jv apply_filter(jctx *c, const jnode *flt, jv in, jframe *f)
{
    /* a chain a|b|c: the innermost (first) filter has a NULL input */
    if (flt->a)
        in = apply_filter(c, flt->a, in, f);
    jv *args, *kw;
    eval_args(c, flt, f, &args, &kw);
    return jx_filter(c, flt->line, flt->filter_id, in, args, flt->n_kids, flt->kw_names, kw, flt->n_kw);
}

static int exec(jctx *c, const jnode *n, jframe *f)
{
    step(c, n->line);
    switch (n->kind) {
    case JN_TEXT: out_put(c, n->line, n->name, n->name_len); return FLOW_NEXT;
    case JN_OUTPUT: {
        const jstr *s = jx_to_str(c, eval(c, n->a, f));
        out_put(c, n->line, s->s, s->len);
        return FLOW_NEXT;
    }
    case JN_IF:
        if (jx_truthy(eval(c, n->a, f)))
            return exec_body(c, n->kids, n->n_kids, f);
        return exec_body(c, n->else_kids, n->n_else, f);
    case JN_FOR: exec_for(c, n, f); return FLOW_NEXT;
    case JN_SET: assign(c, n->line, n->a, eval(c, n->b, f), f); return FLOW_NEXT;
    case JN_SET_BLOCK: {
        jv v = jv_of_str(capture(c, n->kids, n->n_kids, f));
        if (n->c)
            v = apply_filter(c, n->c, v, f);
        assign(c, n->line, n->a, v, f);
        return FLOW_NEXT;
    }
    case JN_MACRO: frame_set(c, f, n->name, (jv){.t = JV_MACRO, .u.macro = n}); return FLOW_NEXT;
    case JN_WITH: {
        jframe *g = frame_new(c, f);
        for (size_t i = 0; i < n->n_kw; i++)
            frame_set(c, g, n->kw_names[i], eval(c, n->kw_vals[i], f));
        return exec_body(c, n->kids, n->n_kids, g);
    }
    case JN_FILTER_BLOCK: {
        const jstr *s = jx_to_str(c, apply_filter(c, n->c, jv_of_str(capture(c, n->kids, n->n_kids, f)), f));
        out_put(c, n->line, s->s, s->len);
        return FLOW_NEXT;
    }
    case JN_BODY: return exec_body(c, n->kids, n->n_kids, f);
    case JN_BREAK: return FLOW_BREAK;
    case JN_CONTINUE: return FLOW_CONTINUE;
    default: jx_fail(c, n->line, "not a statement");
    }
}

static int exec_body(jctx *c, jnode *const *kids, size_t n, jframe *f)
{
    for (size_t i = 0; i < n; i++) {
        const int flow = exec(c, kids[i], f);
        if (flow != FLOW_NEXT)
            return flow;
    }
    return FLOW_NEXT;
}

jv jx_call_macro(jctx *c, int line, const jnode *m, const jv *args, size_t n_args, const char **kw_names,
                 const jv *kw_vals, size_t n_kw)
{
    if (c->depth >= MAX_MACRO_DEPTH)
        jx_fail(c, line, "macro calls nested more than %d deep", MAX_MACRO_DEPTH);
    jframe *g = frame_new(c, c->root);
    jlist *extra = jx_list_new(c, n_args > m->n_kw ? n_args - m->n_kw : 0);
    jdict *kwargs = jx_dict_new(c, 0);
    for (size_t i = 0; i < n_args; i++) {
        if (i < m->n_kw)
            frame_set(c, g, m->kw_names[i], args[i]);
        else
            extra->v[i - m->n_kw] = args[i];
    }
    for (size_t k = 0; k < n_kw; k++) {
        size_t i = 0;
        while (i < m->n_kw && strcmp(m->kw_names[i], kw_names[k]) != 0)
            i++;
        if (i == m->n_kw)
            jx_dict_set(c, kwargs, jv_of_str(jx_str_new(c, kw_names[k], strlen(kw_names[k]))), kw_vals[k]);
        else if (i < n_args)
            jx_fail(c, line, "macro '%s' got multiple values for argument '%s'", m->name, kw_names[k]);
        else
            frame_set(c, g, m->kw_names[i], kw_vals[k]);
    }
    for (size_t i = n_args; i < m->n_kw; i++) { /* the rest: given by keyword, a default, or undefined */
        bool given = false;
        for (size_t k = 0; k < n_kw && !given; k++)
            given = strcmp(m->kw_names[i], kw_names[k]) == 0;
        if (!given)
            frame_set(c, g, m->kw_names[i],
                      m->kw_vals[i] ? eval(c, m->kw_vals[i], g) : jx_undef(c, "parameter '%s' was not provided", m->kw_names[i]));
    }
    frame_set(c, g, "varargs", jv_of_list(extra, true));
    frame_set(c, g, "kwargs", jv_of_dict(kwargs));
    c->depth++;
    jstr *s = capture(c, m->kids, m->n_kids, g);
    c->depth--;
    return jv_of_str(s);
}

/* The rendering itself: 0, or -1 when an error unwound to here (c->err filled). */
static int run(jctx *c, const jinja_template *t)
{
    if (setjmp(c->fail))
        return -1;
    c->globals = frame_new(c, NULL);
    if (c->vars && !cJSON_IsObject(c->vars))
        jx_fail(c, 0, "the template's variables must be a JSON object");
    for (const cJSON *v = c->vars ? c->vars->child : NULL; v; v = v->next)
        frame_set(c, c->globals, jx_str_new(c, v->string, strlen(v->string))->s, jx_from_json(c, v));
    c->root = frame_new(c, c->globals);
    out_put(c, 0, "", 0);
    exec_body(c, t->root->kids, t->root->n_kids, c->root);
    return 0;
}

char *jinja_render(const jinja_template *t, const cJSON *vars, const jinja_limits *limits, size_t *len, base_err *err)
{
    static const jinja_limits dflt = JINJA_LIMITS_DEFAULT;
    jctx *c = calloc(1, sizeof *c);
    if (!c) {
        base_errf(err, "out of memory");
        return NULL;
    }
    c->lim = limits ? limits : &dflt;
    c->arena.limit = c->lim->max_memory;
    c->err = err;
    c->vars = vars;
    if (run(c, t) != 0) {
        free(c->out);
        jarena_free(&c->arena);
        free(c);
        return NULL;
    }
    char *out = c->out;
    if (len)
        *len = c->out_len;
    jarena_free(&c->arena);
    free(c);
    return out;
}
