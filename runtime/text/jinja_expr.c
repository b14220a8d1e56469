/* Jinja expressions, by jinja2's grammar (its parser.py) and precedence: conditional expressions,
 * or, and, not, comparisons, + -, ~, * / // %, **, unary - +, then postfix access, calls, filters
 * and tests; and the token helpers the statement parser shares. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "runtime/text/jinja_parse.h"


void jp_fail(parser *p, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    base_errf(p->err, "line %d: %s", p->t[p->i].line, msg);
    longjmp(p->fail, 1);
}

void *jp_alloc(parser *p, size_t n)
{
    void *m = jarena_alloc(p->a, n);
    if (!m)
        jp_fail(p, "out of memory");
    memset(m, 0, n);
    return m;
}





const char *jp_describe(const jtok *t)
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

void jp_expect_op(parser *p, int op)
{
    if (!jp_is_op(jp_cur(p), op))
        jp_fail(p, "expected '%c', got %s", op, jp_describe(jp_cur(p)));
    p->i++;
}

const char *jp_expect_name(parser *p)
{
    if (jp_cur(p)->type != JT_NAME)
        jp_fail(p, "expected a name, got %s", jp_describe(jp_cur(p)));
    return p->t[p->i++].text;
}

jnode *jp_node(parser *p, int kind)
{
    jnode *n = jp_alloc(p, sizeof *n);
    n->kind = (uint8_t)kind;
    n->line = jp_cur(p)->line;
    return n;
}


void jp_nv_push(parser *p, nvec *v, jnode *x)
{
    if (v->n == v->cap) {
        const size_t cap = v->cap ? 2 * v->cap : 8;
        jnode **m = jp_alloc(p, cap * sizeof *m);
        if (v->n)
            memcpy(m, v->v, v->n * sizeof *m);
        v->v = m, v->cap = cap;
    }
    v->v[v->n++] = x;
}


void jp_sv_push(parser *p, svec *v, const char *x)
{
    if (v->n == v->cap) {
        const size_t cap = v->cap ? 2 * v->cap : 4;
        const char **m = jp_alloc(p, cap * sizeof *m);
        if (v->n)
            memcpy(m, v->v, v->n * sizeof *m);
        v->v = m, v->cap = cap;
    }
    v->v[v->n++] = x;
}

void jp_enter(parser *p)
{
    if (++p->depth > MAX_NESTING)
        jp_fail(p, "the template nests more than %d levels deep", MAX_NESTING);
}

static jnode *postfix(parser *p, jnode *n);

/* ( args, name=value ) */
static void call_args(parser *p, jnode *n)
{
    jp_expect_op(p, '(');
    nvec args = {0}, kwv = {0};
    svec kwn = {0};
    while (!jp_is_op(jp_cur(p), ')')) {
        if (args.n || kwv.n) {
            jp_expect_op(p, ',');
            if (jp_is_op(jp_cur(p), ')'))
                break;
        }
        if (jp_is_op(jp_cur(p), '*') || jp_is_op(jp_cur(p), JOP_POW))
            jp_fail(p, "*args and **kwargs in calls are not supported");
        if (jp_cur(p)->type == JT_NAME && jp_is_op(jp_peek(p, 1), '=')) {
            jp_sv_push(p, &kwn, p->t[p->i].text);
            p->i += 2;
            jp_nv_push(p, &kwv, jp_expression(p, true));
        } else {
            if (kwv.n)
                jp_fail(p, "a positional argument follows a keyword argument");
            jp_nv_push(p, &args, jp_expression(p, true));
        }
    }
    jp_expect_op(p, ')');
    n->kids = args.v, n->n_kids = args.n;
    n->kw_names = kwn.v, n->kw_vals = kwv.v, n->n_kw = kwv.n;
}

/* | name(args) | ...; in == NULL for filter blocks (the first name follows directly) */
jnode *jp_filters(parser *p, jnode *in, bool start_inline)
{
    while (jp_is_op(jp_cur(p), '|') || start_inline) {
        if (!start_inline)
            p->i++;
        start_inline = false;
        jnode *f = jp_node(p, JN_FILTER);
        f->name = jp_expect_name(p);
        if (jp_is_op(jp_cur(p), '.'))
            jp_fail(p, "dotted filter names are not supported");
        f->filter_id = jinja_filter_id(f->name);
        if (f->filter_id < 0)
            jp_fail(p, "unknown filter '%s'", f->name);
        f->a = in;
        if (jp_is_op(jp_cur(p), '('))
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
    if (jp_is_name(jp_cur(p), "not"))
        p->i++, negated = true;
    jnode *t = jp_node(p, JN_TEST);
    t->name = jp_expect_name(p);
    t->test_id = jinja_test_id(t->name);
    if (t->test_id < 0)
        jp_fail(p, "unknown test '%s'", t->name);
    t->a = in;
    const jtok *c = jp_cur(p);
    if (jp_is_op(c, '(')) {
        call_args(p, t);
    } else if ((c->type == JT_NAME || c->type == JT_STRING || c->type == JT_INT || c->type == JT_FLOAT ||
                jp_is_op(c, '[') || jp_is_op(c, '{')) &&
               !jp_is_name(c, "else") && !jp_is_name(c, "or") && !jp_is_name(c, "and")) {
        if (jp_is_name(c, "is"))
            jp_fail(p, "tests cannot be chained with 'is'");
        t->kids = jp_alloc(p, sizeof *t->kids);
        t->kids[0] = postfix(p, jp_primary(p, false));
        t->n_kids = 1;
    }
    if (!negated)
        return t;
    jnode *n = jp_node(p, JN_NOT);
    n->a = t;
    return n;
}

/* [a], [a:b:c], .name, .0, (args) */
static jnode *postfix(parser *p, jnode *n)
{
    for (;;) {
        if (jp_is_op(jp_cur(p), '.')) {
            p->i++;
            if (jp_cur(p)->type == JT_INT) {
                jnode *g = jp_node(p, JN_GETITEM);
                g->a = n;
                g->b = jp_node(p, JN_CONST);
                g->b->val = jv_int(p->t[p->i++].i);
                n = g;
            } else {
                jnode *g = jp_node(p, JN_GETATTR);
                g->a = n;
                g->name = jp_expect_name(p);
                n = g;
            }
        } else if (jp_is_op(jp_cur(p), '[')) {
            p->i++;
            jnode *parts[3] = {NULL, NULL, NULL};
            int colons = 0;
            while (!jp_is_op(jp_cur(p), ']')) {
                if (jp_is_op(jp_cur(p), ':')) {
                    if (++colons > 2)
                        jp_fail(p, "a slice has at most two ':'");
                    p->i++;
                } else if (jp_is_op(jp_cur(p), ',')) {
                    jp_fail(p, "subscripts with several values are not supported");
                } else if (parts[colons]) {
                    jp_fail(p, "expected ']' or ':', got %s", jp_describe(jp_cur(p)));
                } else {
                    parts[colons] = jp_expression(p, true);
                }
            }
            p->i++;
            if (colons == 0 && !parts[0])
                jp_fail(p, "an empty subscript []");
            jnode *g = jp_node(p, colons ? JN_SLICE : JN_GETITEM);
            g->a = n;
            g->b = parts[0], g->c = parts[1], g->d = parts[2];
            n = g;
        } else if (jp_is_op(jp_cur(p), '(')) {
            jnode *c = jp_node(p, JN_CALL);
            c->a = n;
            call_args(p, c);
            n = c;
        } else {
            return n;
        }
    }
}


jnode *jp_primary(parser *p, bool with_ns)
{
    jp_enter(p);
    const jtok *t = jp_cur(p);
    jnode *n;
    if (t->type == JT_NAME) {
        p->i++;
        n = jp_node(p, JN_CONST);
        if (!strcmp(t->text, "true") || !strcmp(t->text, "True") || !strcmp(t->text, "false") ||
            !strcmp(t->text, "False")) {
            n->val = jv_bool(t->text[0] == 't' || t->text[0] == 'T');
        } else if (!strcmp(t->text, "none") || !strcmp(t->text, "None")) {
            n->val = jv_none();
        } else if (with_ns && jp_is_op(jp_cur(p), '.')) {
            p->i++;
            n->kind = JN_NSREF;
            n->name = t->text;
            n->name2 = jp_expect_name(p);
        } else {
            n->kind = JN_NAME;
            n->name = t->text, n->name_len = t->len;
        }
    } else if (t->type == JT_STRING) { /* adjacent literals join, as in Python */
        size_t len = 0, k = p->i;
        for (; p->t[k].type == JT_STRING; k++)
            len += p->t[k].len;
        jstr *s = jp_alloc(p, sizeof *s + len + 1);
        for (; p->i < k; p->i++) {
            memcpy(s->s + s->len, p->t[p->i].text, p->t[p->i].len);
            s->len += p->t[p->i].len;
        }
        n = jp_node(p, JN_CONST);
        n->val = jv_of_str(s);
    } else if (t->type == JT_INT || t->type == JT_FLOAT) {
        p->i++;
        n = jp_node(p, JN_CONST);
        n->val = t->type == JT_INT ? jv_int(t->i) : jv_float(t->f);
    } else if (jp_is_op(t, '(')) {
        p->i++;
        n = jp_tuple(p, false, true, NULL, true, false);
        jp_expect_op(p, ')');
    } else if (jp_is_op(t, '[') || jp_is_op(t, '{')) {
        const bool dict = jp_is_op(t, '{');
        const int close = dict ? '}' : ']';
        p->i++;
        n = jp_node(p, dict ? JN_DICT : JN_LIST);
        nvec items = {0};
        while (!jp_is_op(jp_cur(p), close)) {
            if (items.n) {
                jp_expect_op(p, ',');
                if (jp_is_op(jp_cur(p), close))
                    break;
            }
            jp_nv_push(p, &items, jp_expression(p, true));
            if (dict) {
                jp_expect_op(p, ':');
                jp_nv_push(p, &items, jp_expression(p, true));
            }
        }
        p->i++;
        n->kids = items.v, n->n_kids = items.n;
    } else {
        jp_fail(p, "unexpected %s", jp_describe(t));
    }
    p->depth--;
    return n;
}

static jnode *unary(parser *p, bool with_filter)
{
    jp_enter(p);
    jnode *n;
    if (jp_is_op(jp_cur(p), '-') || jp_is_op(jp_cur(p), '+')) {
        n = jp_node(p, jp_is_op(jp_cur(p), '-') ? JN_NEG : JN_POS);
        p->i++;
        n->a = unary(p, false);
    } else {
        n = jp_primary(p, false);
    }
    n = postfix(p, n);
    while (with_filter) {
        if (jp_is_op(jp_cur(p), '|'))
            n = jp_filters(p, n, false);
        else if (jp_is_name(jp_cur(p), "is"))
            n = test(p, n);
        else if (jp_is_op(jp_cur(p), '('))
            n = postfix(p, n);
        else
            break;
    }
    p->depth--;
    return n;
}

static jnode *binop(parser *p, int op, jnode *a, jnode *b)
{
    jnode *n = jp_node(p, JN_BINOP);
    n->op = op, n->a = a, n->b = b;
    return n;
}

static jnode *power(parser *p)
{
    jnode *n = unary(p, true);
    while (jp_is_op(jp_cur(p), JOP_POW)) {
        p->i++;
        n = binop(p, JOP_POW, n, unary(p, true));
    }
    return n;
}

static jnode *math2(parser *p)
{
    jnode *n = power(p);
    while (jp_is_op(jp_cur(p), '*') || jp_is_op(jp_cur(p), '/') || jp_is_op(jp_cur(p), JOP_FLOORDIV) || jp_is_op(jp_cur(p), '%')) {
        const int op = p->t[p->i++].op;
        n = binop(p, op, n, power(p));
    }
    return n;
}

static jnode *concat(parser *p)
{
    jnode *n = math2(p);
    while (jp_is_op(jp_cur(p), '~')) {
        p->i++;
        n = binop(p, '~', n, math2(p));
    }
    return n;
}

static jnode *math1(parser *p)
{
    jnode *n = concat(p);
    while (jp_is_op(jp_cur(p), '+') || jp_is_op(jp_cur(p), '-')) {
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
        const jtok *t = jp_cur(p);
        int op = 0;
        if (t->type == JT_OP && (t->op == JOP_EQ || t->op == JOP_NE || t->op == '<' || t->op == '>' ||
                                 t->op == JOP_LE || t->op == JOP_GE))
            op = t->op, p->i++;
        else if (jp_is_name(t, "in"))
            op = JOP_IN, p->i++;
        else if (jp_is_name(t, "not") && jp_is_name(jp_peek(p, 1), "in"))
            op = JOP_NOTIN, p->i += 2;
        else
            break;
        if (operands.n == sizeof ops / sizeof *ops)
            jp_fail(p, "a comparison chain of more than 64 operators");
        ops[operands.n] = op;
        jp_nv_push(p, &operands, math1(p));
    }
    if (!operands.n)
        return first;
    jnode *n = jp_node(p, JN_COMPARE);
    n->a = first;
    n->kids = operands.v, n->n_kids = operands.n;
    n->ops = jp_alloc(p, operands.n * sizeof *n->ops);
    memcpy(n->ops, ops, operands.n * sizeof *ops);
    return n;
}

static jnode *not_expr(parser *p)
{
    if (jp_is_name(jp_cur(p), "not")) {
        jp_enter(p);
        jnode *n = jp_node(p, JN_NOT);
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
    while (jp_is_name(jp_cur(p), "and")) {
        p->i++;
        jnode *x = jp_node(p, JN_AND);
        x->a = n, x->b = not_expr(p);
        n = x;
    }
    return n;
}

static jnode *or_expr(parser *p)
{
    jnode *n = and_expr(p);
    while (jp_is_name(jp_cur(p), "or")) {
        p->i++;
        jnode *x = jp_node(p, JN_OR);
        x->a = n, x->b = and_expr(p);
        n = x;
    }
    return n;
}

jnode *jp_expression(parser *p, bool with_cond)
{
    jp_enter(p);
    jnode *n = or_expr(p);
    while (with_cond && jp_is_name(jp_cur(p), "if")) {
        p->i++;
        jnode *c = jp_node(p, JN_COND);
        c->b = n;
        c->a = or_expr(p);
        if (jp_is_name(jp_cur(p), "else")) {
            p->i++;
            c->c = jp_expression(p, true);
        }
        n = c;
    }
    p->depth--;
    return n;
}

/* a, b, c (a tuple) or a single expression; simplified: names only (assignment targets) */
jnode *jp_tuple(parser *p, bool simplified, bool with_cond, const char *end_name, bool explicit_parens,
                bool with_ns)
{
    nvec items = {0};
    bool is_tuple = false;
    const int line = jp_cur(p)->line;
    for (;;) {
        if (items.n)
            jp_expect_op(p, ',');
        const jtok *t = jp_cur(p);
        if (t->type == JT_VAR_END || t->type == JT_BLOCK_END || jp_is_op(t, ')') || (end_name && jp_is_name(t, end_name)))
            break;
        jp_nv_push(p, &items, simplified ? jp_primary(p, with_ns) : jp_expression(p, with_cond));
        if (jp_is_op(jp_cur(p), ','))
            is_tuple = true;
        else
            break;
    }
    if (!is_tuple) {
        if (items.n)
            return items.v[0];
        if (!explicit_parens)
            jp_fail(p, "expected an expression, got %s", jp_describe(jp_cur(p)));
    }
    jnode *n = jp_node(p, JN_TUPLE);
    n->line = line;
    n->kids = items.v, n->n_kids = items.n;
    return n;
}
