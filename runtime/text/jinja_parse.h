/* The Jinja parser's insides, shared by its two files: jinja_expr.c parses expressions (and holds
 * the token helpers), jinja_parse.c statements and the template. A syntax error unwinds with
 * longjmp to jinja_parse (every node is in the template's arena). */
#ifndef DINFER_RUNTIME_TEXT_JINJA_PARSE_H
#define DINFER_RUNTIME_TEXT_JINJA_PARSE_H

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

/* a growing array of node pointers */
typedef struct nvec {
    jnode **v;
    size_t n, cap;
} nvec;

/* a growing array of names (keyword arguments, parameters) */
typedef struct svec {
    const char **v;
    size_t n, cap;
} svec;

static inline const jtok *jp_cur(const parser *p)
{
    return &p->t[p->i];
}

static inline const jtok *jp_peek(const parser *p, size_t k)
{
    return p->i + k < p->n ? &p->t[p->i + k] : &p->t[p->n - 1];
}

static inline bool jp_is_op(const jtok *t, int op)
{
    return t->type == JT_OP && t->op == op;
}

static inline bool jp_is_name(const jtok *t, const char *name)
{
    return t->type == JT_NAME && strcmp(t->text, name) == 0;
}

/* Stops the parse with err = "line N: message" (the current token's line). */
_Noreturn void jp_fail(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void *jp_alloc(parser *p, size_t n); /* zeroed, in the template's arena */
const char *jp_describe(const jtok *t);
void jp_expect_op(parser *p, int op);
const char *jp_expect_name(parser *p);
jnode *jp_node(parser *p, int kind);
void jp_nv_push(parser *p, nvec *v, jnode *x);
void jp_sv_push(parser *p, svec *v, const char *x);
void jp_enter(parser *p); /* one level deeper; fails past MAX_NESTING */

/* expressions: a full one (with_cond: `a if b else c` too); a name or literal (with_ns: ns.attr
 * too); a comma list (simplified: names only, for assignment targets; ending at end_name); the
 * filters after in (in NULL and start_inline: a filter block's, its first name directly) */
jnode *jp_expression(parser *p, bool with_cond);
jnode *jp_primary(parser *p, bool with_ns);
jnode *jp_tuple(parser *p, bool simplified, bool with_cond, const char *end_name, bool explicit_parens, bool with_ns);
jnode *jp_filters(parser *p, jnode *in, bool start_inline);

#endif
