/* Tokens to a syntax tree, by jinja2's grammar (its parser.py): the same precedence (conditional
 * expressions, or, and, not, comparisons, + -, ~, * / // %, **, unary - +, then postfix access,
 * calls, filters and tests), the same statements. Constructs outside the supported part are
 * refused here, naming them and their line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/text/jinja_impl.h"

#define MAX_NESTING 200 /* expressions and blocks inside one another */

typedef struct parser {
    jarena *a;
    const jtok *t; /* (n) */
    size_t n, i;
    int depth;
    base_err *err;
    jmp_buf fail;
} parser;

_Noreturn static void pfail(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pfail(parser *p, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    base_errf(p->err, "line %d: %s", p->t[p->i].line, msg);
    longjmp(p->fail, 1);
}

static void *palloc(parser *p, size_t n)
{
    void *m = jarena_alloc(p->a, n);
    if (!m)
        pfail(p, "out of memory");
    memset(m, 0, n);
    return m;
}

static const jtok *cur(const parser *p)
{
    return &p->t[p->i];
}

static const jtok *peek(const parser *p, size_t k)
{
    return p->i + k < p->n ? &p->t[p->i + k] : &p->t[p->n - 1];
}

static bool is_op(const jtok *t, int op)
{
    return t->type == JT_OP && t->op == op;
}

static bool is_name(const jtok *t, const char *name)
{
    return t->type == JT_NAME && strcmp(t->text, name) == 0;
}

static const char *describe(const jtok *t)
{
    static _Thread_local char buf[64];
    switch (t->type) {
    case JT_EOF: return "the end of the template";
    case JT_DATA: return "template text";
    case JT_VAR_BEGIN: return "'{{'";
    case JT_VAR_END: return "'}}'";
    case JT_BLOCK_BEGIN: return "'{%'";
    case JT_BLOCK_END: return "'%}'";
    case JT_NAME: snprintf(buf, sizeof buf, "'%.40s'", t->text); return buf;
    case JT_STRING: return "a string";
    case JT_INT:
    case JT_FLOAT: return "a number";
    default:
        if (t->op < 256)
            snprintf(buf, sizeof buf, "'%c'", t->op);
        else
            snprintf(buf, sizeof buf, "an operator");
        return buf;
    }
}

static void expect_op(parser *p, int op)
{
    if (!is_op(cur(p), op))
        pfail(p, "expected '%c', got %s", op, describe(cur(p)));
    p->i++;
}

static const char *expect_name(parser *p)
{
    if (cur(p)->type != JT_NAME)
        pfail(p, "expected a name, got %s", describe(cur(p)));
    return p->t[p->i++].text;
}

static jnode *node(parser *p, int kind)
{
    jnode *n = palloc(p, sizeof *n);
    n->kind = (uint8_t)kind;
    n->line = cur(p)->line;
    return n;
}

/* a growing array of node pointers */
typedef struct nvec {
    jnode **v;
    size_t n, cap;
} nvec;

static void nv_push(parser *p, nvec *v, jnode *x)
{
    if (v->n == v->cap) {
        const size_t cap = v->cap ? 2 * v->cap : 8;
        jnode **m = palloc(p, cap * sizeof *m);
        if (v->n)
            memcpy(m, v->v, v->n * sizeof *m);
        v->v = m, v->cap = cap;
    }
    v->v[v->n++] = x;
}

/* a growing array of names (keyword arguments, parameters) */
typedef struct svec {
    const char **v;
    size_t n, cap;
} svec;

static void sv_push(parser *p, svec *v, const char *x)
{
    if (v->n == v->cap) {
        const size_t cap = v->cap ? 2 * v->cap : 4;
        const char **m = palloc(p, cap * sizeof *m);
        if (v->n)
            memcpy(m, v->v, v->n * sizeof *m);
        v->v = m, v->cap = cap;
    }
    v->v[v->n++] = x;
}

static void enter(parser *p)
{
    if (++p->depth > MAX_NESTING)
        pfail(p, "the template nests more than %d levels deep", MAX_NESTING);
}

static jnode *expression(parser *p, bool with_cond);
static jnode *primary(parser *p, bool with_ns);
static jnode *postfix(parser *p, jnode *n);

/* ( args, name=value ) */
static void call_args(parser *p, jnode *n)
{
    expect_op(p, '(');
    nvec args = {0}, kwv = {0};
    svec kwn = {0};
    while (!is_op(cur(p), ')')) {
        if (args.n || kwv.n) {
            expect_op(p, ',');
            if (is_op(cur(p), ')'))
                break;
        }
        if (is_op(cur(p), '*') || is_op(cur(p), JOP_POW))
            pfail(p, "*args and **kwargs in calls are not supported");
        if (cur(p)->type == JT_NAME && is_op(peek(p, 1), '=')) {
            sv_push(p, &kwn, p->t[p->i].text);
            p->i += 2;
            nv_push(p, &kwv, expression(p, true));
        } else {
            if (kwv.n)
                pfail(p, "a positional argument follows a keyword argument");
            nv_push(p, &args, expression(p, true));
        }
    }
    expect_op(p, ')');
    n->kids = args.v, n->n_kids = args.n;
    n->kw_names = kwn.v, n->kw_vals = kwv.v, n->n_kw = kwv.n;
}

/* | name(args) | ...; in == NULL for filter blocks (the first name follows directly) */
static jnode *filters(parser *p, jnode *in, bool start_inline)
{
    while (is_op(cur(p), '|') || start_inline) {
        if (!start_inline)
            p->i++;
        start_inline = false;
        jnode *f = node(p, JN_FILTER);
        f->name = expect_name(p);
        if (is_op(cur(p), '.'))
            pfail(p, "dotted filter names are not supported");
        f->filter_id = jinja_filter_id(f->name);
        if (f->filter_id < 0)
            pfail(p, "unknown filter '%s'", f->name);
        f->a = in;
        if (is_op(cur(p), '('))
            call_args(p, f);
        in = f;
    }
    return in;
}

/* is [not] name [(args) | arg] */
static jnode *test(parser *p, jnode *in)
{
    p->i++; /* is */
    bool negated = false;
    if (is_name(cur(p), "not"))
        p->i++, negated = true;
    jnode *t = node(p, JN_TEST);
    t->name = expect_name(p);
    t->test_id = jinja_test_id(t->name);
    if (t->test_id < 0)
        pfail(p, "unknown test '%s'", t->name);
    t->a = in;
    const jtok *c = cur(p);
    if (is_op(c, '(')) {
        call_args(p, t);
    } else if ((c->type == JT_NAME || c->type == JT_STRING || c->type == JT_INT || c->type == JT_FLOAT ||
                is_op(c, '[') || is_op(c, '{')) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is"))
            pfail(p, "tests cannot be chained with 'is'");
        t->kids = palloc(p, sizeof *t->kids);
        t->kids[0] = postfix(p, primary(p, false));
        t->n_kids = 1;
    }
    if (!negated)
        return t;
    jnode *n = node(p, JN_NOT);
    n->a = t;
    return n;
}

/* [a], [a:b:c], .name, .0, (args) */
static jnode *postfix(parser *p, jnode *n)
{
    for (;;) {
        if (is_op(cur(p), '.')) {
            p->i++;
            if (cur(p)->type == JT_INT) {
                jnode *g = node(p, JN_GETITEM);
                g->a = n;
                g->b = node(p, JN_CONST);
                g->b->val = jv_int(p->t[p->i++].i);
                n = g;
            } else {
                jnode *g = node(p, JN_GETATTR);
                g->a = n;
                g->name = expect_name(p);
                n = g;
            }
        } else if (is_op(cur(p), '[')) {
            p->i++;
            jnode *parts[3] = {NULL, NULL, NULL};
            int colons = 0;
            while (!is_op(cur(p), ']')) {
                if (is_op(cur(p), ':')) {
                    if (++colons > 2)
                        pfail(p, "a slice has at most two ':'");
                    p->i++;
                } else if (is_op(cur(p), ',')) {
                    pfail(p, "subscripts with several values are not supported");
                } else if (parts[colons]) {
                    pfail(p, "expected ']' or ':', got %s", describe(cur(p)));
                } else {
                    parts[colons] = expression(p, true);
                }
            }
            p->i++;
            if (colons == 0 && !parts[0])
                pfail(p, "an empty subscript []");
            jnode *g = node(p, colons ? JN_SLICE : JN_GETITEM);
            g->a = n;
            g->b = parts[0], g->c = parts[1], g->d = parts[2];
            n = g;
        } else if (is_op(cur(p), '(')) {
            jnode *c = node(p, JN_CALL);
            c->a = n;
            call_args(p, c);
            n = c;
        } else {
            return n;
        }
    }
}

static jnode *tuple(parser *p, bool simplified, bool with_cond, const char *end_name, bool explicit_parens,
                    bool with_ns);

static jnode *primary(parser *p, bool with_ns)
{
    enter(p);
    const jtok *t = cur(p);
    jnode *n;
    if (t->type == JT_NAME) {
        p->i++;
        n = node(p, JN_CONST);
        if (!strcmp(t->text, "true") || !strcmp(t->text, "True") || !strcmp(t->text, "false") ||
            !strcmp(t->text, "False")) {
            n->val = jv_bool(t->text[0] == 't' || t->text[0] == 'T');
        } else if (!strcmp(t->text, "none") || !strcmp(t->text, "None")) {
            n->val = jv_none();
        } else if (with_ns && is_op(cur(p), '.')) {
            p->i++;
            n->kind = JN_NSREF;
            n->name = t->text;
            n->name2 = expect_name(p);
        } else {
            n->kind = JN_NAME;
            n->name = t->text, n->name_len = t->len;
        }
    } else if (t->type == JT_STRING) { /* adjacent literals join, as in Python */
        size_t len = 0, k = p->i;
        for (; p->t[k].type == JT_STRING; k++)
            len += p->t[k].len;
        jstr *s = palloc(p, sizeof *s + len + 1);
        for (; p->i < k; p->i++) {
            memcpy(s->s + s->len, p->t[p->i].text, p->t[p->i].len);
            s->len += p->t[p->i].len;
        }
        n = node(p, JN_CONST);
        n->val = jv_of_str(s);
    } else if (t->type == JT_INT || t->type == JT_FLOAT) {
        p->i++;
        n = node(p, JN_CONST);
        n->val = t->type == JT_INT ? jv_int(t->i) : jv_float(t->f);
    } else if (is_op(t, '(')) {
        p->i++;
        n = tuple(p, false, true, NULL, true, false);
        expect_op(p, ')');
    } else if (is_op(t, '[') || is_op(t, '{')) {
        const bool dict = is_op(t, '{');
        const int close = dict ? '}' : ']';
        p->i++;
        n = node(p, dict ? JN_DICT : JN_LIST);
        nvec items = {0};
        while (!is_op(cur(p), close)) {
            if (items.n) {
                expect_op(p, ',');
                if (is_op(cur(p), close))
                    break;
            }
            nv_push(p, &items, expression(p, true));
            if (dict) {
                expect_op(p, ':');
                nv_push(p, &items, expression(p, true));
            }
        }
        p->i++;
        n->kids = items.v, n->n_kids = items.n;
    } else {
        pfail(p, "unexpected %s", describe(t));
    }
    p->depth--;
    return n;
}

static jnode *unary(parser *p, bool with_filter)
{
    enter(p);
    jnode *n;
    if (is_op(cur(p), '-') || is_op(cur(p), '+')) {
        n = node(p, is_op(cur(p), '-') ? JN_NEG : JN_POS);
        p->i++;
        n->a = unary(p, false);
    } else {
        n = primary(p, false);
    }
    n = postfix(p, n);
    while (with_filter) {
        if (is_op(cur(p), '|'))
            n = filters(p, n, false);
        else if (is_name(cur(p), "is"))
            n = test(p, n);
        else if (is_op(cur(p), '('))
            n = postfix(p, n);
        else
            break;
    }
    p->depth--;
    return n;
}

static jnode *binop(parser *p, int op, jnode *a, jnode *b)
{
    jnode *n = node(p, JN_BINOP);
    n->op = op, n->a = a, n->b = b;
    return n;
}

static jnode *power(parser *p)
{
    jnode *n = unary(p, true);
    while (is_op(cur(p), JOP_POW)) {
        p->i++;
        n = binop(p, JOP_POW, n, unary(p, true));
    }
    return n;
}

static jnode *math2(parser *p)
{
    jnode *n = power(p);
    while (is_op(cur(p), '*') || is_op(cur(p), '/') || is_op(cur(p), JOP_FLOORDIV) || is_op(cur(p), '%')) {
        const int op = p->t[p->i++].op;
        n = binop(p, op, n, power(p));
    }
    return n;
}

static jnode *concat(parser *p)
{
    jnode *n = math2(p);
    while (is_op(cur(p), '~')) {
        p->i++;
        n = binop(p, '~', n, math2(p));
    }
    return n;
}

static jnode *math1(parser *p)
{
    jnode *n = concat(p);
    while (is_op(cur(p), '+') || is_op(cur(p), '-')) {
        const int op = p->t[p->i++].op;
        n = binop(p, op, n, concat(p));
    }
    return n;
}

static jnode *compare(parser *p)
{
    jnode *first = math1(p);
    nvec operands = {0};
    int ops[64];
    for (;;) {
        const jtok *t = cur(p);
        int op = 0;
        if (t->type == JT_OP && (t->op == JOP_EQ || t->op == JOP_NE || t->op == '<' || t->op == '>' ||
                                 t->op == JOP_LE || t->op == JOP_GE))
            op = t->op, p->i++;
        else if (is_name(t, "in"))
            op = JOP_IN, p->i++;
        else if (is_name(t, "not") && is_name(peek(p, 1), "in"))
            op = JOP_NOTIN, p->i += 2;
        else
            break;
        if (operands.n == sizeof ops / sizeof *ops)
            pfail(p, "a comparison chain of more than 64 operators");
        ops[operands.n] = op;
        nv_push(p, &operands, math1(p));
    }
    if (!operands.n)
        return first;
    jnode *n = node(p, JN_COMPARE);
    n->a = first;
    n->kids = operands.v, n->n_kids = operands.n;
    n->ops = palloc(p, operands.n * sizeof *n->ops);
    memcpy(n->ops, ops, operands.n * sizeof *ops);
    return n;
}

static jnode *not_expr(parser *p)
{
    if (is_name(cur(p), "not")) {
        enter(p);
        jnode *n = node(p, JN_NOT);
        p->i++;
        n->a = not_expr(p);
        p->depth--;
        return n;
    }
    return compare(p);
}

static jnode *and_expr(parser *p)
{
    jnode *n = not_expr(p);
    while (is_name(cur(p), "and")) {
        p->i++;
        jnode *x = node(p, JN_AND);
        x->a = n, x->b = not_expr(p);
        n = x;
    }
    return n;
}

static jnode *or_expr(parser *p)
{
    jnode *n = and_expr(p);
    while (is_name(cur(p), "or")) {
        p->i++;
        jnode *x = node(p, JN_OR);
        x->a = n, x->b = and_expr(p);
        n = x;
    }
    return n;
}

static jnode *expression(parser *p, bool with_cond)
{
    enter(p);
    jnode *n = or_expr(p);
    while (with_cond && is_name(cur(p), "if")) {
        p->i++;
        jnode *c = node(p, JN_COND);
        c->b = n;
        c->a = or_expr(p);
        if (is_name(cur(p), "else")) {
            p->i++;
            c->c = expression(p, true);
        }
        n = c;
    }
    p->depth--;
    return n;
}

/* a, b, c (a tuple) or a single expression; simplified: names only (assignment targets) */
static jnode *tuple(parser *p, bool simplified, bool with_cond, const char *end_name, bool explicit_parens,
                    bool with_ns)
{
    nvec items = {0};
    bool is_tuple = false;
    const int line = cur(p)->line;
    for (;;) {
        if (items.n)
            expect_op(p, ',');
        const jtok *t = cur(p);
        if (t->type == JT_VAR_END || t->type == JT_BLOCK_END || is_op(t, ')') || (end_name && is_name(t, end_name)))
            break;
        nv_push(p, &items, simplified ? primary(p, with_ns) : expression(p, with_cond));
        if (is_op(cur(p), ','))
            is_tuple = true;
        else
            break;
    }
    if (!is_tuple) {
        if (items.n)
            return items.v[0];
        if (!explicit_parens)
            pfail(p, "expected an expression, got %s", describe(cur(p)));
    }
    jnode *n = node(p, JN_TUPLE);
    n->line = line;
    n->kids = items.v, n->n_kids = items.n;
    return n;
}

static void check_target(parser *p, const jnode *t)
{
    if (t->kind == JN_TUPLE) {
        for (size_t i = 0; i < t->n_kids; i++)
            check_target(p, t->kids[i]);
    } else if (t->kind != JN_NAME && t->kind != JN_NSREF) {
        pfail(p, "cannot assign to this expression");
    }
}

/* ---- statements ---- */

static void subparse(parser *p, nvec *out, const char *const *ends);

static void expect_block_end(parser *p)
{
    if (cur(p)->type != JT_BLOCK_END)
        pfail(p, "expected '%%}', got %s", describe(cur(p)));
    p->i++;
}

/* the body of a block up to one of ends, into (*kids, *n); leaves the parser on that tag's name */
static void block_body(parser *p, jnode ***kids, size_t *n, const char *const *ends)
{
    if (is_op(cur(p), ':'))
        p->i++;
    expect_block_end(p);
    nvec out = {0};
    subparse(p, &out, ends);
    *kids = out.v, *n = out.n;
    if (cur(p)->type == JT_EOF) {
        size_t k = 0;
        while (ends[k + 1])
            k++;
        pfail(p, "the template ends inside a block: expected '{%% %s %%}'", ends[k]);
    }
}

static jnode *parse_for(parser *p)
{
    jnode *n = node(p, JN_FOR);
    n->a = tuple(p, true, true, "in", false, false);
    check_target(p, n->a);
    if (!is_name(cur(p), "in"))
        pfail(p, "expected 'in', got %s", describe(cur(p)));
    p->i++;
    n->b = tuple(p, false, false, "recursive", false, false);
    if (is_name(cur(p), "if")) {
        p->i++;
        n->c = expression(p, true);
    }
    if (is_name(cur(p), "recursive"))
        pfail(p, "recursive for loops are not supported");
    static const char *const ends[] = {"endfor", "else", NULL};
    block_body(p, &n->kids, &n->n_kids, ends);
    if (is_name(cur(p), "else")) {
        p->i++;
        static const char *const ends2[] = {"endfor", NULL};
        block_body(p, &n->else_kids, &n->n_else, ends2);
    }
    p->i++; /* endfor */
    return n;
}

static jnode *parse_if(parser *p)
{
    jnode *top = node(p, JN_IF), *n = top;
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    for (;;) {
        n->a = tuple(p, false, false, NULL, false, false);
        block_body(p, &n->kids, &n->n_kids, ends);
        if (is_name(cur(p), "elif")) {
            p->i++;
            jnode *e = node(p, JN_IF);
            n->else_kids = palloc(p, sizeof *n->else_kids);
            n->else_kids[0] = e, n->n_else = 1;
            n = e;
            continue;
        }
        if (is_name(cur(p), "else")) {
            p->i++;
            static const char *const ends2[] = {"endif", NULL};
            block_body(p, &n->else_kids, &n->n_else, ends2);
        }
        p->i++; /* endif */
        return top;
    }
}

static jnode *parse_set(parser *p)
{
    jnode *target = tuple(p, true, true, NULL, false, true);
    check_target(p, target);
    if (is_op(cur(p), '=')) {
        p->i++;
        jnode *n = node(p, JN_SET);
        n->a = target;
        n->b = tuple(p, false, true, NULL, false, false);
        return n;
    }
    jnode *n = node(p, JN_SET_BLOCK);
    n->a = target;
    if (is_op(cur(p), '|'))
        n->c = filters(p, NULL, false);
    static const char *const ends[] = {"endset", NULL};
    block_body(p, &n->kids, &n->n_kids, ends);
    p->i++;
    return n;
}

static jnode *parse_macro(parser *p)
{
    jnode *n = node(p, JN_MACRO);
    n->name = expect_name(p);
    expect_op(p, '(');
    nvec defaults = {0};
    svec names = {0};
    bool any_default = false;
    while (!is_op(cur(p), ')')) {
        if (defaults.n)
            expect_op(p, ',');
        sv_push(p, &names, expect_name(p));
        jnode *d = NULL;
        if (is_op(cur(p), '=')) {
            p->i++;
            d = expression(p, true);
            any_default = true;
        } else if (any_default) {
            pfail(p, "a parameter without a default follows one with a default");
        }
        nv_push(p, &defaults, d);
    }
    p->i++;
    n->kw_names = names.v, n->kw_vals = defaults.v, n->n_kw = defaults.n;
    static const char *const ends[] = {"endmacro", NULL};
    block_body(p, &n->kids, &n->n_kids, ends);
    p->i++;
    return n;
}

static jnode *parse_with(parser *p)
{
    jnode *n = node(p, JN_WITH);
    nvec vals = {0};
    svec names = {0};
    while (cur(p)->type != JT_BLOCK_END) {
        if (vals.n)
            expect_op(p, ',');
        sv_push(p, &names, expect_name(p));
        expect_op(p, '=');
        nv_push(p, &vals, expression(p, true));
    }
    n->kw_names = names.v, n->kw_vals = vals.v, n->n_kw = vals.n;
    static const char *const ends[] = {"endwith", NULL};
    block_body(p, &n->kids, &n->n_kids, ends);
    p->i++;
    return n;
}

/* a body that ends at `end` and is a scope of its own only through the caller */
static jnode *simple_block(parser *p, int kind, const char *end)
{
    jnode *n = node(p, kind);
    const char *const ends[] = {end, NULL};
    block_body(p, &n->kids, &n->n_kids, ends);
    p->i++;
    return n;
}

static jnode *statement(parser *p)
{
    const jtok *t = cur(p);
    if (t->type != JT_NAME)
        pfail(p, "expected a tag name, got %s", describe(t));
    const char *name = t->text;
    p->i++;
    enter(p);
    jnode *n;
    if (!strcmp(name, "for")) {
        n = parse_for(p);
    } else if (!strcmp(name, "if")) {
        n = parse_if(p);
    } else if (!strcmp(name, "set")) {
        n = parse_set(p);
    } else if (!strcmp(name, "macro")) {
        n = parse_macro(p);
    } else if (!strcmp(name, "with")) {
        n = parse_with(p);
    } else if (!strcmp(name, "filter")) {
        jnode *f = filters(p, NULL, true);
        n = simple_block(p, JN_FILTER_BLOCK, "endfilter");
        n->c = f;
    } else if (!strcmp(name, "generation")) { /* transformers' assistant-mask marker: text as it is */
        n = simple_block(p, JN_BODY, "endgeneration");
    } else if (!strcmp(name, "print")) {
        n = node(p, JN_OUTPUT);
        n->a = tuple(p, false, true, NULL, false, false);
    } else if (!strcmp(name, "break") || !strcmp(name, "continue")) {
        n = node(p, name[0] == 'b' ? JN_BREAK : JN_CONTINUE);
    } else {
        static const char *known[] = {"include", "import", "from", "extends", "block", "call", "autoescape",
                                      "raw", "do", "trans"};
        for (size_t k = 0; k < sizeof known / sizeof *known; k++)
            if (!strcmp(name, known[k]))
                pfail(p, "the '%s' tag is not supported", name);
        p->i--;
        pfail(p, "unknown tag '%s'", name);
    }
    p->depth--;
    expect_block_end(p); /* after the statement, or after its closing tag's name */
    return n;
}

/* Template text and tags up to a block tag named in ends (or the end); leaves the parser on it. */
static void subparse(parser *p, nvec *out, const char *const *ends)
{
    for (;;) {
        const jtok *t = cur(p);
        if (t->type == JT_EOF)
            return;
        if (t->type == JT_DATA) {
            jnode *n = node(p, JN_TEXT);
            n->name = t->text, n->name_len = t->len;
            nv_push(p, out, n);
            p->i++;
        } else if (t->type == JT_VAR_BEGIN) {
            p->i++;
            jnode *n = node(p, JN_OUTPUT);
            n->a = tuple(p, false, true, NULL, false, false);
            if (cur(p)->type != JT_VAR_END)
                pfail(p, "expected '}}', got %s", describe(cur(p)));
            p->i++;
            nv_push(p, out, n);
        } else if (t->type == JT_BLOCK_BEGIN) {
            p->i++;
            for (size_t k = 0; ends && ends[k]; k++)
                if (is_name(cur(p), ends[k]))
                    return;
            if (cur(p)->type == JT_NAME && !ends) {
                static const char *closers[] = {"endfor", "endif", "elif", "else", "endset", "endmacro",
                                                "endwith", "endfilter", "endgeneration"};
                for (size_t k = 0; k < sizeof closers / sizeof *closers; k++)
                    if (is_name(cur(p), closers[k]))
                        pfail(p, "'%s' without the block it closes", closers[k]);
            }
            if (ends && cur(p)->type == JT_NAME && !strncmp(cur(p)->text, "end", 3) &&
                strcmp(cur(p)->text, ends[0]) != 0)
                pfail(p, "expected '%s', got '%s'", ends[0], cur(p)->text);
            nv_push(p, out, statement(p));
        } else {
            pfail(p, "unexpected %s", describe(t));
        }
    }
}

/* The whole template as one body; NULL when a syntax error unwound to here. */
static jnode *parse_all(parser *p)
{
    if (setjmp(p->fail))
        return NULL;
    nvec body = {0};
    subparse(p, &body, NULL);
    jnode *root = node(p, JN_BODY);
    root->kids = body.v, root->n_kids = body.n;
    return root;
}

jinja_template *jinja_parse(const char *src, size_t len, base_err *err)
{
    jinja_template *t = calloc(1, sizeof *t);
    if (!t) {
        base_errf(err, "out of memory");
        return NULL;
    }
    jtok *toks;
    size_t n;
    if (jinja_lex(&t->arena, src, len, &toks, &n, err)) {
        jinja_free(t);
        return NULL;
    }
    parser p = {.a = &t->arena, .t = toks, .n = n, .err = err};
    if (!(t->root = parse_all(&p))) {
        jinja_free(t);
        return NULL;
    }
    return t;
}

void jinja_free(jinja_template *t)
{
    if (!t)
        return;
    jarena_free(&t->arena);
    free(t);
}
