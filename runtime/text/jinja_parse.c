/* Jinja statements and the template, by jinja2's grammar (its parser.py): if, for, set, macro, with,
 * filter, generation, print, break and continue (expressions: jinja_expr.c). Constructs outside the
 * supported part are refused here, naming them and their line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/text/jinja_parse.h"

static void check_target(parser *p, const jnode *t)
{
    if (t->kind == JN_TUPLE) {
        for (size_t i = 0; i < t->n_kids; i++)
            check_target(p, t->kids[i]);
    } else if (t->kind != JN_NAME && t->kind != JN_NSREF) {
        jp_fail(p, "cannot assign to this expression");
    }
}

/* ---- statements ---- */

static void subparse(parser *p, nvec *out, const char *const *ends);

static void expect_block_end(parser *p)
{
    if (jp_cur(p)->type != JT_BLOCK_END)
        jp_fail(p, "expected '%%}', got %s", jp_describe(jp_cur(p)));
    p->i++;
}

/* the body of a block up to one of ends, into (*kids, *n); leaves the parser on that tag's name */
static void block_body(parser *p, jnode ***kids, size_t *n, const char *const *ends)
{
    if (jp_is_op(jp_cur(p), ':'))
        p->i++;
    expect_block_end(p);
    nvec out = {0};
    subparse(p, &out, ends);
    *kids = out.v, *n = out.n;
    if (jp_cur(p)->type == JT_EOF) {
        size_t k = 0;
        while (ends[k + 1])
            k++;
        jp_fail(p, "the template ends inside a block: expected '{%% %s %%}'", ends[k]);
    }
}

static jnode *parse_for(parser *p)
{
    jnode *n = jp_node(p, JN_FOR);
    n->a = jp_tuple(p, true, true, "in", false, false);
    check_target(p, n->a);
    if (!jp_is_name(jp_cur(p), "in"))
        jp_fail(p, "expected 'in', got %s", jp_describe(jp_cur(p)));
    p->i++;
    n->b = jp_tuple(p, false, false, "recursive", false, false);
    if (jp_is_name(jp_cur(p), "if")) {
        p->i++;
        n->c = jp_expression(p, true);
    }
    if (jp_is_name(jp_cur(p), "recursive"))
        jp_fail(p, "recursive for loops are not supported");
    static const char *const ends[] = {"endfor", "else", NULL};
    block_body(p, &n->kids, &n->n_kids, ends);
    if (jp_is_name(jp_cur(p), "else")) {
        p->i++;
        static const char *const ends2[] = {"endfor", NULL};
        block_body(p, &n->else_kids, &n->n_else, ends2);
    }
    p->i++; /* endfor */
    return n;
}

static jnode *parse_if(parser *p)
{
    jnode *top = jp_node(p, JN_IF), *n = top;
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    for (;;) {
        n->a = jp_tuple(p, false, false, NULL, false, false);
        block_body(p, &n->kids, &n->n_kids, ends);
        if (jp_is_name(jp_cur(p), "elif")) {
            p->i++;
            jnode *e = jp_node(p, JN_IF);
            n->else_kids = jp_alloc(p, sizeof *n->else_kids);
            n->else_kids[0] = e, n->n_else = 1;
            n = e;
            continue;
        }
        if (jp_is_name(jp_cur(p), "else")) {
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
    jnode *target = jp_tuple(p, true, true, NULL, false, true);
    check_target(p, target);
    if (jp_is_op(jp_cur(p), '=')) {
        p->i++;
        jnode *n = jp_node(p, JN_SET);
        n->a = target;
        n->b = jp_tuple(p, false, true, NULL, false, false);
        return n;
    }
    jnode *n = jp_node(p, JN_SET_BLOCK);
    n->a = target;
    if (jp_is_op(jp_cur(p), '|'))
        n->c = jp_filters(p, NULL, false);
    static const char *const ends[] = {"endset", NULL};
    block_body(p, &n->kids, &n->n_kids, ends);
    p->i++;
    return n;
}

static jnode *parse_macro(parser *p)
{
    jnode *n = jp_node(p, JN_MACRO);
    n->name = jp_expect_name(p);
    jp_expect_op(p, '(');
    nvec defaults = {0};
    svec names = {0};
    bool any_default = false;
    while (!jp_is_op(jp_cur(p), ')')) {
        if (defaults.n)
            jp_expect_op(p, ',');
        jp_sv_push(p, &names, jp_expect_name(p));
        jnode *d = NULL;
        if (jp_is_op(jp_cur(p), '=')) {
            p->i++;
            d = jp_expression(p, true);
            any_default = true;
        } else if (any_default) {
            jp_fail(p, "a parameter without a default follows one with a default");
        }
        jp_nv_push(p, &defaults, d);
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
    jnode *n = jp_node(p, JN_WITH);
    nvec vals = {0};
    svec names = {0};
    while (jp_cur(p)->type != JT_BLOCK_END) {
        if (vals.n)
            jp_expect_op(p, ',');
        jp_sv_push(p, &names, jp_expect_name(p));
        jp_expect_op(p, '=');
        jp_nv_push(p, &vals, jp_expression(p, true));
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
    jnode *n = jp_node(p, kind);
    const char *const ends[] = {end, NULL};
    block_body(p, &n->kids, &n->n_kids, ends);
    p->i++;
    return n;
}

static jnode *statement(parser *p)
{
    const jtok *t = jp_cur(p);
    if (t->type != JT_NAME)
        jp_fail(p, "expected a tag name, got %s", jp_describe(t));
    const char *name = t->text;
    p->i++;
    jp_enter(p);
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
        jnode *f = jp_filters(p, NULL, true);
        n = simple_block(p, JN_FILTER_BLOCK, "endfilter");
        n->c = f;
    } else if (!strcmp(name, "generation")) { /* transformers' assistant-mask marker: text as it is */
        n = simple_block(p, JN_BODY, "endgeneration");
    } else if (!strcmp(name, "print")) {
        n = jp_node(p, JN_OUTPUT);
        n->a = jp_tuple(p, false, true, NULL, false, false);
    } else if (!strcmp(name, "break") || !strcmp(name, "continue")) {
        n = jp_node(p, name[0] == 'b' ? JN_BREAK : JN_CONTINUE);
    } else {
        static const char *known[] = {"include", "import", "from", "extends", "block", "call", "autoescape",
                                      "raw", "do", "trans"};
        for (size_t k = 0; k < sizeof known / sizeof *known; k++)
            if (!strcmp(name, known[k]))
                jp_fail(p, "the '%s' tag is not supported", name);
        p->i--;
        jp_fail(p, "unknown tag '%s'", name);
    }
    p->depth--;
    expect_block_end(p); /* after the statement, or after its closing tag's name */
    return n;
}

/* Template text and tags up to a block tag named in ends (or the end); leaves the parser on it. */
static void subparse(parser *p, nvec *out, const char *const *ends)
{
    for (;;) {
        const jtok *t = jp_cur(p);
        if (t->type == JT_EOF)
            return;
        if (t->type == JT_DATA) {
            jnode *n = jp_node(p, JN_TEXT);
            n->name = t->text, n->name_len = t->len;
            jp_nv_push(p, out, n);
            p->i++;
        } else if (t->type == JT_VAR_BEGIN) {
            p->i++;
            jnode *n = jp_node(p, JN_OUTPUT);
            n->a = jp_tuple(p, false, true, NULL, false, false);
            if (jp_cur(p)->type != JT_VAR_END)
                jp_fail(p, "expected '}}', got %s", jp_describe(jp_cur(p)));
            p->i++;
            jp_nv_push(p, out, n);
        } else if (t->type == JT_BLOCK_BEGIN) {
            p->i++;
            for (size_t k = 0; ends && ends[k]; k++)
                if (jp_is_name(jp_cur(p), ends[k]))
                    return;
            if (jp_cur(p)->type == JT_NAME && !ends) {
                static const char *closers[] = {"endfor", "endif", "elif", "else", "endset", "endmacro",
                                                "endwith", "endfilter", "endgeneration"};
                for (size_t k = 0; k < sizeof closers / sizeof *closers; k++)
                    if (jp_is_name(jp_cur(p), closers[k]))
                        jp_fail(p, "'%s' without the block it closes", closers[k]);
            }
            if (ends && jp_cur(p)->type == JT_NAME && !strncmp(jp_cur(p)->text, "end", 3) &&
                strcmp(jp_cur(p)->text, ends[0]) != 0)
                jp_fail(p, "expected '%s', got '%s'", ends[0], jp_cur(p)->text);
            jp_nv_push(p, out, statement(p));
        } else {
            jp_fail(p, "unexpected %s", jp_describe(t));
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
    jnode *root = jp_node(p, JN_BODY);
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
