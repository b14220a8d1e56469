/* The Jinja interpreter's insides, shared by its files: the arena, values, the syntax tree, and the
 * render context. jinja_lex.c + jinja_parse.c turn source into a tree (allocated in the template's
 * arena); jinja_eval.c walks it, allocating values in a render arena freed as a whole at the end;
 * jinja_value.c holds what values do (Python's str, repr, json.dumps, ==, <, truthiness);
 * jinja_builtins.c the filters, tests, globals and methods. Errors while rendering unwind with
 * longjmp to jinja_render (every allocation is in the arena, so nothing leaks). */
#ifndef DINFER_RUNTIME_TEXT_JINJA_IMPL_H
#define DINFER_RUNTIME_TEXT_JINJA_IMPL_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/text/jinja.h"

/* ---- arena ---- */

typedef struct jarena {
    struct jchunk *head;
    size_t used, limit; /* bytes taken from malloc, and the most allowed (0: none) */
} jarena;

/* NULL when out of memory or over the limit. */
void *jarena_alloc(jarena *a, size_t n);
void jarena_free(jarena *a);

/* ---- values ---- */

typedef enum jv_type {
    JV_UNDEF, /* a name or member that does not exist: prints as "", false, iterates as nothing */
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,
    JV_LIST,  /* a list, or a tuple (flag JV_TUPLE) */
    JV_DICT,
    JV_NS,    /* namespace(): a dict whose members `set ns.x = ...` may change */
    JV_MACRO,
    JV_FUNC,  /* a global function (range, namespace, ...) */
    JV_LOOP,  /* a for loop's `loop` */
} jv_type;

#define JV_TUPLE 1

typedef struct jstr {
    size_t len;
    char s[]; /* (len + 1) NUL-terminated UTF-8 */
} jstr;

typedef struct jv {
    uint8_t t, flags;
    union {
        bool b;
        int64_t i;
        double f;
        jstr *s;
        struct jlist *l;
        struct jdict *d;
        const struct jnode *macro;
        int fn;
        struct jloop *loop;
        const char *undef_name; /* JV_UNDEF: the name, for messages (may be NULL) */
    } u;
} jv;

typedef struct jlist {
    size_t n;
    jv *v; /* (n) */
} jlist;

typedef struct jdict {
    size_t n, cap;
    jv *k, *v; /* (n) keys (strings, numbers) and values, in insertion order */
} jdict;

typedef struct jloop {
    const jlist *items;
    size_t i;
} jloop;

static inline jv jv_undef(const char *name) { return (jv){.t = JV_UNDEF, .u.undef_name = name}; }
static inline jv jv_none(void) { return (jv){.t = JV_NONE}; }
static inline jv jv_bool(bool b) { return (jv){.t = JV_BOOL, .u.b = b}; }
static inline jv jv_int(int64_t i) { return (jv){.t = JV_INT, .u.i = i}; }
static inline jv jv_float(double f) { return (jv){.t = JV_FLOAT, .u.f = f}; }
static inline jv jv_of_str(jstr *s) { return (jv){.t = JV_STR, .u.s = s}; }
static inline jv jv_of_list(struct jlist *l, bool tuple)
{
    return (jv){.t = JV_LIST, .flags = tuple ? JV_TUPLE : 0, .u.l = l};
}
static inline jv jv_of_dict(struct jdict *d) { return (jv){.t = JV_DICT, .u.d = d}; }

/* ---- tokens and the syntax tree ---- */

typedef enum jtok_type {
    JT_EOF,
    JT_DATA,        /* template text between tags */
    JT_VAR_BEGIN,   /* {{ */
    JT_VAR_END,     /* }} */
    JT_BLOCK_BEGIN, /* {% */
    JT_BLOCK_END,   /* %} */
    JT_NAME,
    JT_STRING,      /* text: the unescaped value */
    JT_INT,
    JT_FLOAT,
    JT_OP,          /* op: one of the operator codes below */
} jtok_type;

/* operators, as single codes: the one-character ones are themselves */
enum {
    JOP_FLOORDIV = 256, /* // */
    JOP_POW,            /* ** */
    JOP_EQ,             /* == */
    JOP_NE,             /* != */
    JOP_GE,             /* >= */
    JOP_LE,             /* <= */
    JOP_IN,             /* in (comparisons only) */
    JOP_NOTIN,          /* not in */
};

typedef struct jtok {
    uint8_t type;
    int op;
    int line;
    const char *text; /* DATA, NAME, STRING: arena copy, NUL-terminated */
    size_t len;
    int64_t i;
    double f;
} jtok;

typedef enum jn_kind {
    /* expressions */
    JN_CONST,   /* val */
    JN_NAME,    /* name */
    JN_LIST,    /* kids */
    JN_TUPLE,   /* kids */
    JN_DICT,    /* kids: key, value, key, value ... */
    JN_GETATTR, /* a . name */
    JN_GETITEM, /* a [ b ] */
    JN_SLICE,   /* a [ b : c : d ], each of b, c, d may be NULL */
    JN_CALL,    /* a ( kids, kw ) */
    JN_FILTER,  /* a | name ( kids, kw ); a NULL in filter blocks */
    JN_TEST,    /* a is name ( kids ) */
    JN_NOT,     /* not a */
    JN_NEG,     /* - a */
    JN_POS,     /* + a */
    JN_AND,     /* a and b */
    JN_OR,      /* a or b */
    JN_BINOP,   /* a op b: + - * / // % ** ~ */
    JN_COMPARE, /* a, then kids[i] compared by ops[i] in a chain */
    JN_COND,    /* b if a else c (c may be NULL) */
    JN_NSREF,   /* set target name . name2 */
    /* statements */
    JN_TEXT,      /* name, name_len: text */
    JN_OUTPUT,    /* a: an expression to print */
    JN_IF,        /* a: test; kids: body; else_kids */
    JN_FOR,       /* a: target, b: iterable, c: filter test or NULL; kids: body; else_kids */
    JN_SET,       /* a: target, b: value */
    JN_SET_BLOCK, /* a: target, c: a filter (JN_FILTER with a NULL input) or NULL; kids: body */
    JN_MACRO,     /* name; kw: parameters and defaults (NULL: none); kids: body */
    JN_WITH,      /* kw: names and values; kids: body */
    JN_FILTER_BLOCK, /* c: the filter; kids: body */
    JN_BODY,      /* kids: a body without a scope of its own (generation blocks) */
    JN_BREAK,
    JN_CONTINUE,
} jn_kind;

typedef struct jnode {
    uint8_t kind;
    int op; /* JN_BINOP */
    int line;
    const char *name; /* (name_len) NAME, GETATTR, FILTER, TEST, NSREF (the namespace), MACRO, TEXT */
    size_t name_len;
    const char *name2; /* NSREF: the attribute */
    jv val;            /* CONST */
    struct jnode *a, *b, *c, *d;
    struct jnode **kids; /* (n_kids) */
    size_t n_kids;
    struct jnode **else_kids; /* (n_else) */
    size_t n_else;
    const char **kw_names; /* (n_kw) keyword arguments, macro parameters, with-bindings */
    struct jnode **kw_vals;
    size_t n_kw;
    int *ops; /* (n_kids) COMPARE */
    int filter_id, test_id; /* FILTER, TEST: the builtin's index */
} jnode;

struct jinja_template {
    jarena arena;
    jnode *root; /* a JN_BODY */
};

/* jinja_lex.c: the whole source as tokens (in a), terminated by JT_EOF; -1 with err. */
int jinja_lex(jarena *a, const char *src, size_t len, jtok **toks, size_t *n, base_err *err);

/* The byte length of the whitespace character (Python's str.isspace) at s[i] (i < n), or 0. */
size_t jx_space_at(const char *s, size_t n, size_t i);

/* jinja_filters.c / jinja_builtins.c: the index of a filter or test by name, -1 when there is none. */
int jinja_filter_id(const char *name);
int jinja_test_id(const char *name);

/* ---- rendering ---- */

typedef struct jframe {
    struct jframe *parent;
    size_t n, cap;
    const char **names;
    jv *vals;
} jframe;

typedef struct jctx {
    jarena arena;
    jmp_buf fail;
    base_err *err;
    const jinja_limits *lim;
    uint64_t steps;
    char *out; /* (out_len) the rendered text so far */
    size_t out_len, out_cap;
    jframe *root; /* the template's top-level variables */
    const cJSON *vars;
    jframe *globals; /* vars converted, on first use */
    int depth;       /* macro calls in progress */
} jctx;

/* Stops the rendering with err = "line N: message". */
_Noreturn void jx_fail(jctx *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void *jx_alloc(jctx *c, size_t n);

/* jinja_value.c */
/* a growing byte buffer in the arena */
typedef struct jbuf {
    jctx *c;
    char *p;
    size_t len, cap;
} jbuf;
void jb_put(jbuf *b, const char *s, size_t n);
void jb_puts(jbuf *b, const char *s);
void jb_putc(jbuf *b, char ch);
jstr *jb_str(jbuf *b);

jstr *jx_str_new(jctx *c, const char *s, size_t len);
jstr *jx_str_cat(jctx *c, const jstr *a, const jstr *b);
jlist *jx_list_new(jctx *c, size_t n);
jdict *jx_dict_new(jctx *c, size_t cap);
void jx_dict_set(jctx *c, jdict *d, jv key, jv val);
/* The member named key (a string key), or NULL. */
jv *jx_dict_get(const jdict *d, const char *key, size_t len);
jv *jx_dict_find(const jdict *d, jv key);
const char *jx_type_name(jv v);
bool jx_truthy(jv v);
bool jx_eq(jv a, jv b);
/* <0, 0, >0; fails (a TypeError) for values Python does not order. */
int jx_cmp(jctx *c, int line, jv a, jv b);
bool jx_is_number(jv v);
/* v as an integer (bools count); fails naming what for anything else */
int64_t jx_need_int(jctx *c, int line, const char *what, jv v);
double jx_num(jv v);
/* str(v) as Python gives it (undefined: ""). */
jstr *jx_to_str(jctx *c, jv v);
/* repr(v). */
void jx_repr(jv v, jbuf *b);
/* json.dumps(v, indent (<0: none), separators (NULL: the defaults), sort_keys, ensure_ascii), as
 * transformers' tojson calls it. */
jstr *jx_to_json(jctx *c, int line, jv v, int indent, const char *item_sep, const char *key_sep, bool sort_keys,
                 bool ascii);
jv jx_from_json(jctx *c, const cJSON *j);
/* Code points in a string, and the byte offset of code point k (k <= count). */
size_t jx_utf8_count(const jstr *s);
size_t jx_utf8_offset(const jstr *s, size_t k);

/* jinja_ops.c: what expressions do to values */
/* An undefined value whose use fails with the message (formatted into the arena). */
jv jx_undef(jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
_Noreturn void jx_fail_undef(jctx *c, int line, jv u);
jv jx_getattr(jctx *c, int line, jv obj, const char *name);
jv jx_getitem(jctx *c, int line, jv obj, jv key);
/* obj[start:stop:step] with Python's rules (strings by code point); None: the default bound */
jv jx_slice(jctx *c, int line, jv obj, jv start, jv stop, jv step);
/* a op b for + - * / // % ** ~ (JOP_ codes for the two-character ones) */
jv jx_arith(jctx *c, int line, int op, jv a, jv b);
jv jx_unary(jctx *c, int line, int op, jv v); /* '-' or '+' */
bool jx_contains(jctx *c, int line, jv item, jv seq);
/* a op b for == != < > <= >= in, not in */
bool jx_compare(jctx *c, int line, int op, jv a, jv b);
/* What iterating v gives (a list's items, a dict's keys, a string's characters; undefined: none). */
const jlist *jx_iter(jctx *c, int line, jv v);

/* jinja_eval.c, for the builtins that call back */
jv jx_call_macro(jctx *c, int line, const jnode *m, const jv *args, size_t n_args, const char **kw_names,
                 const jv *kw_vals, size_t n_kw);

/* jinja_methods.c: Python's str operations the filters share */
/* 'l' lower, 'u' upper, 't' str.title, 'c' str.capitalize, 'T' jinja2's title filter */
jstr *jx_str_case(jctx *c, const jstr *s, char mode);
jstr *jx_str_strip(jctx *c, const jstr *s, const jstr *chars, bool left, bool right);
jstr *jx_str_replace(jctx *c, const jstr *s, const jstr *old, const jstr *new_, int64_t count);
jv jx_str_splitlines(jctx *c, const jstr *s, bool keepends);

/* jinja_filters.c, jinja_builtins.c: filter / test / global function calls; the values are evaluated. */
jv jx_filter(jctx *c, int line, int id, jv in, const jv *args, size_t n, const char **kw_names, const jv *kw_vals,
             size_t n_kw);
bool jx_test(jctx *c, int line, int id, jv in, const jv *args, size_t n);
/* A global function's value by name (JV_FUNC), or JV_UNDEF. */
jv jx_global(const char *name);
jv jx_call_func(jctx *c, int line, int fn, const jv *args, size_t n, const char **kw_names, const jv *kw_vals,
                size_t n_kw);
/* obj.name(args) for Python's str, list and dict methods and loop.cycle; *found false when obj has
 * no such method. */
jv jx_call_method(jctx *c, int line, jv obj, const char *name, const jv *args, size_t n, const char **kw_names,
                  const jv *kw_vals, size_t n_kw, bool *found);

#endif
