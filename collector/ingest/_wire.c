/* An EventBatch's events at C speed, straight from the wire bytes (collector.ingest.codec.decode_events
 * uses it; its pure-Python path is the reference, which tests/collector/test_wire_decoder.py checks this
 * against, value for value and byte for byte of the attributes text).
 *
 * decode(raw, kinds[, cls, head, tail, wrap]) -> list of tuples, or None
 *   ``raw`` is the EventBatch as received (any contiguous buffer), already parsed by upb, so its framing
 *   and UTF-8 are known good; malformed bytes still raise ValueError here, never a read out of bounds.
 *   Each tuple holds an event's scalar fields in FIELDS order, then its attributes as the stored JSON text:
 *   keys sorted, ensure_ascii=False, ", " and ": ", numbers as float.__repr__ (what json's C encoder
 *   writes), "{}" without attributes; given ``cls`` (a named tuple), each event is cls(*head, *those
 *   scalars, wrap(text), *tail) instead, made here. None asks for the Python path: where protobuf would
 *   merge a message field given twice (attributes, a map entry's value, struct_value / list_value), a
 *   known field comes with another wire type, a map entry has unknown fields, a group, a number that is
 *   not finite, or nesting deeper than MAX_DEPTH. Those never come from our agents, and upb's parse then decides, including the
 *   refusal's exact words.
 * An event the ingest checks refuse (unknown kind, no usable id, no time, NUL in a text field; in
 * decode_events' order, first event first) raises Refused(seq, reason, kind); codec words the message.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 100 /* containers, the attributes Struct being the first: codec.MAX_DEPTH */

enum { WIRE_OK = 0, WIRE_BAD = -1, WIRE_FALLBACK = -2, WIRE_ERR = -3 }; /* WIRE_ERR: a Python exception is set */

static PyObject *Refused;

typedef struct {
    char *s;
    size_t n, cap;
} Buf;

static int grow(Buf *b, size_t extra) {
    if (b->cap - b->n >= extra)
        return WIRE_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->n < extra)
        cap *= 2;
    char *s = (char *)PyMem_Realloc(b->s, cap);
    if (s == NULL) {
        PyErr_NoMemory();
        return WIRE_ERR;
    }
    b->s = s;
    b->cap = cap;
    return WIRE_OK;
}

static int put(Buf *b, const char *s, size_t n) {
    if (grow(b, n))
        return WIRE_ERR;
    memcpy(b->s + b->n, s, n);
    b->n += n;
    return WIRE_OK;
}

/* One field's tag and payload; p advances past it. */
typedef struct {
    uint32_t field;
    int wt;
    uint64_t v;           /* varint, fixed64 */
    const uint8_t *data;  /* length-delimited */
    size_t len;
} Field;

static int varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (p >= end)
            return WIRE_BAD;
        uint8_t c = *p++;
        v |= (uint64_t)(c & 0x7f) << shift; /* the tenth byte's high bits fall off, as in upb */
        if (!(c & 0x80)) {
            *pp = p;
            *out = v;
            return WIRE_OK;
        }
    }
    return WIRE_BAD; /* more than 10 bytes */
}

/* The next field of [*pp, end): WIRE_OK, WIRE_BAD or WIRE_FALLBACK (groups, which upb keeps as unknown fields). */
static int next(const uint8_t **pp, const uint8_t *end, Field *f) {
    uint64_t tag;
    if (varint(pp, end, &tag))
        return WIRE_BAD;
    f->field = (uint32_t)(tag >> 3);
    f->wt = (int)(tag & 7);
    if (tag >> 3 == 0 || tag >> 3 > 0x1fffffff)
        return WIRE_BAD;
    switch (f->wt) {
    case 0:
        return varint(pp, end, &f->v) ? WIRE_BAD : WIRE_OK;
    case 1:
        if (end - *pp < 8)
            return WIRE_BAD;
        memcpy(&f->v, *pp, 8); /* little-endian on the wire; every platform we build for is too */
        *pp += 8;
        return WIRE_OK;
    case 2: {
        uint64_t n;
        if (varint(pp, end, &n) || n > (uint64_t)(end - *pp))
            return WIRE_BAD;
        f->data = *pp;
        f->len = (size_t)n;
        *pp += n;
        return WIRE_OK;
    }
    case 5:
        if (end - *pp < 4)
            return WIRE_BAD;
        *pp += 4;
        return WIRE_OK;
    case 3:
    case 4:
        return WIRE_FALLBACK;
    default:
        return WIRE_BAD;
    }
}

/* A JSON string as json.encoder.encode_basestring writes it (ensure_ascii=False). */
static int put_string(Buf *b, const uint8_t *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    if (grow(b, n + 2))
        return WIRE_ERR;
    b->s[b->n++] = '"';
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && s[run] >= 0x20 && s[run] != '"' && s[run] != '\\')
            run++;
        if (put(b, (const char *)s + i, run - i))
            return WIRE_ERR;
        if (run == n)
            break;
        uint8_t c = s[run];
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t k = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u'; esc[2] = '0'; esc[3] = '0'; esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
            k = 6;
        }
        if (put(b, esc, k))
            return WIRE_ERR;
        i = run + 1;
    }
    if (grow(b, 1))
        return WIRE_ERR;
    b->s[b->n++] = '"';
    return WIRE_OK;
}

/* float.__repr__, as json's C encoder writes a float. */
static int put_number(Buf *b, double d) {
    if (!isfinite(d))
        return WIRE_FALLBACK;
    char small[32];
    if (d == floor(d) && fabs(d) < 1e15 && !(d == 0 && signbit(d))) {
        /* integral: repr is the digits and ".0" (below 1e16; 1e15 keeps this clear of rounding) */
        int k = snprintf(small, sizeof small, "%lld.0", (long long)d);
        return put(b, small, (size_t)k);
    }
    char *r = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (r == NULL)
        return WIRE_ERR;
    int rc = put(b, r, strlen(r));
    PyMem_Free(r);
    return rc;
}

static int put_struct(Buf *b, const uint8_t *p, const uint8_t *end, int depth);
static int put_list(Buf *b, const uint8_t *p, const uint8_t *end, int depth);

/* A google.protobuf.Value; the oneof's last member on the wire is the one set. */
static int put_value(Buf *b, const uint8_t *p, const uint8_t *end, int depth) {
    Field f, kind = {0};
    int messages = 0;
    while (p < end) {
        int rc = next(&p, end, &f);
        if (rc)
            return rc;
        static const int8_t wire[7] = {-1, 0, 1, 2, 0, 2, 2}; /* null, number, string, bool, struct, list */
        if (f.field > 6) /* unknown: skipped */
            continue;
        if (f.wt != wire[f.field])
            return WIRE_FALLBACK;
        if (f.field >= 5 && ++messages > 1)
            return WIRE_FALLBACK; /* protobuf would merge the two messages */
        kind = f;
    }
    switch (kind.field) {
    case 0:
    case 1:
        return put(b, "null", 4);
    case 2: {
        double d;
        memcpy(&d, &kind.v, sizeof d);
        return put_number(b, d);
    }
    case 3:
        return put_string(b, kind.data, kind.len);
    case 4:
        return kind.v ? put(b, "true", 4) : put(b, "false", 5);
    case 5:
        return put_struct(b, kind.data, kind.data + kind.len, depth + 1);
    default:
        return put_list(b, kind.data, kind.data + kind.len, depth + 1);
    }
}

typedef struct {
    const uint8_t *key, *value;
    size_t key_len, value_len;
    size_t order;
    int has_value;
} Entry;

static int by_key(const void *x, const void *y) {
    const Entry *a = (const Entry *)x, *b = (const Entry *)y;
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = memcmp(a->key, b->key, n); /* UTF-8 byte order is code point order, as sort_keys compares */
    if (c == 0)
        c = (a->key_len > b->key_len) - (a->key_len < b->key_len);
    if (c == 0)
        c = (a->order > b->order) - (a->order < b->order);
    return c;
}

static int put_struct(Buf *b, const uint8_t *p, const uint8_t *end, int depth) {
    if (depth > MAX_DEPTH)
        return WIRE_FALLBACK;
    Entry stack[8], *entries = stack; /* small: this frame recurses up to MAX_DEPTH times */
    size_t count = 0, cap = 8;
    int rc = WIRE_OK;
    Field f;
    while (p < end && rc == WIRE_OK) {
        if ((rc = next(&p, end, &f)))
            break;
        if (f.field != 1)
            continue;
        if (f.wt != 2) {
            rc = WIRE_FALLBACK;
            break;
        }
        if (count == cap) {
            Entry *more = entries == stack ? (Entry *)PyMem_Malloc(2 * cap * sizeof *more)
                                           : (Entry *)PyMem_Realloc(entries, 2 * cap * sizeof *more);
            if (more == NULL) {
                PyErr_NoMemory();
                rc = WIRE_ERR;
                break;
            }
            if (entries == stack)
                memcpy(more, stack, sizeof stack);
            entries = more;
            cap *= 2;
        }
        Entry *e = &entries[count];
        *e = (Entry){(const uint8_t *)"", NULL, 0, 0, count, 0};
        const uint8_t *q = f.data, *qend = f.data + f.len;
        Field g;
        while (q < qend && rc == WIRE_OK) {
            if ((rc = next(&q, qend, &g)))
                break;
            if (g.field > 2 || g.wt != 2 || (g.field == 2 && e->has_value))
                rc = WIRE_FALLBACK; /* upb keeps an entry with unknown fields out of the map (as an unknown
                                       field of the Struct); another wire type; a value it would merge */
            else if (g.field == 1)
                e->key = g.data, e->key_len = g.len;
            else
                e->value = g.data, e->value_len = g.len, e->has_value = 1;
        }
        count++;
    }
    if (rc == WIRE_OK) {
        qsort(entries, count, sizeof *entries, by_key);
        rc = put(b, "{", 1);
        int first = 1;
        for (size_t i = 0; i < count && rc == WIRE_OK; i++) {
            const Entry *e = &entries[i];
            if (i + 1 < count && e->key_len == entries[i + 1].key_len &&
                memcmp(e->key, entries[i + 1].key, e->key_len) == 0)
                continue; /* a key given again: the last entry holds, as upb keeps it */
            if (!first && (rc = put(b, ", ", 2)))
                break;
            first = 0;
            if ((rc = put_string(b, e->key, e->key_len)) || (rc = put(b, ": ", 2)))
                break;
            rc = e->has_value ? put_value(b, e->value, e->value + e->value_len, depth) : put(b, "null", 4);
        }
        if (rc == WIRE_OK)
            rc = put(b, "}", 1);
    }
    if (entries != stack)
        PyMem_Free(entries);
    return rc;
}

static int put_list(Buf *b, const uint8_t *p, const uint8_t *end, int depth) {
    if (depth > MAX_DEPTH)
        return WIRE_FALLBACK;
    int rc = put(b, "[", 1), first = 1;
    Field f;
    while (p < end && rc == WIRE_OK) {
        if ((rc = next(&p, end, &f)))
            break;
        if (f.field != 1)
            continue;
        if (f.wt != 2)
            return WIRE_FALLBACK;
        if (!first && (rc = put(b, ", ", 2)))
            break;
        first = 0;
        rc = put_value(b, f.data, f.data + f.len, depth);
    }
    return rc ? rc : put(b, "]", 1);
}

/* Event's fields by number: what FIELDS lists them as, and how the wire carries them. */
enum { T_STR = 1, T_INT, T_UINT, T_MSG };
static const int8_t TYPE[15] = {0, T_STR, T_STR, T_INT, T_UINT, T_STR, T_STR, T_INT, T_STR, T_STR, T_INT, T_INT,
                                T_STR, T_STR, T_MSG};
/* FIELDS order (StoredEvent's) as field numbers */
static const int8_t ORDER[13] = {4, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13};
static const char *const NAMES[13] = {"seq", "id", "kind", "time_unix_ns", "path", "dest_path", "size",
                                      "sha256", "user", "uid", "pid", "process", "exe"};
/* checked for NUL, as decode_events does: id, path, dest_path, user, process, exe, sha256 */
static const int8_t TEXTS[7] = {1, 5, 6, 9, 12, 13, 8};

static int refuse(uint64_t seq, const char *reason, PyObject *kind) {
    PyObject *args = Py_BuildValue("(KsO)", (unsigned long long)seq, reason, kind ? kind : Py_None);
    if (args != NULL) {
        PyErr_SetObject(Refused, args);
        Py_DECREF(args);
    }
    return WIRE_ERR;
}

/* How decode() shapes each event: a plain tuple (scalars, text), or cls(*head, *scalars, wrap(text), *tail). */
typedef struct {
    PyTypeObject *cls; /* NULL: plain tuples */
    PyObject *head, *tail, *wrap;
} Shape;

static PyObject *EMPTY; /* "{}" */

/* One Event into a new tuple (*out), or WIRE_FALLBACK / WIRE_BAD / WIRE_ERR. */
static int event(const uint8_t *p, const uint8_t *end, PyObject *kinds, const Shape *shape, Buf *b, PyObject **out) {
    Field last[15] = {{0}};
    int attributes = 0;
    Field f;
    while (p < end) {
        int rc = next(&p, end, &f);
        if (rc)
            return rc;
        if (f.field > 14)
            continue;
        if (f.wt != (TYPE[f.field] == T_STR || TYPE[f.field] == T_MSG ? 2 : 0))
            return WIRE_FALLBACK;
        if (f.field == 14 && attributes++)
            return WIRE_FALLBACK; /* protobuf merges attributes given twice */
        last[f.field] = f;
    }
    Py_ssize_t at = shape->cls ? PyTuple_GET_SIZE(shape->head) : 0;
    Py_ssize_t size = shape->cls ? at + 14 + PyTuple_GET_SIZE(shape->tail) : 14;
    /* a tuple subclass (a named tuple) is allocated and filled as tuple.__new__(cls, ...) does */
    PyObject *t = shape->cls ? shape->cls->tp_alloc(shape->cls, size) : PyTuple_New(size);
    if (t == NULL)
        return WIRE_ERR;
    for (int i = 0; i < 13; i++) {
        const Field *g = &last[ORDER[i]];
        PyObject *v;
        switch (TYPE[ORDER[i]]) {
        case T_STR:
            v = PyUnicode_DecodeUTF8((const char *)g->data, (Py_ssize_t)g->len, NULL);
            break;
        case T_INT:
            v = PyLong_FromLongLong((long long)(int64_t)g->v);
            break;
        default:
            v = PyLong_FromUnsignedLongLong((unsigned long long)g->v);
        }
        if (v == NULL) {
            Py_DECREF(t);
            return WIRE_ERR;
        }
        PyTuple_SET_ITEM(t, at + i, v);
    }
    /* decode_events' checks, in its order */
    uint64_t seq = last[4].v;
    PyObject *kind = PyTuple_GET_ITEM(t, at + 2), *id = PyTuple_GET_ITEM(t, at + 1);
    int known = PySequence_Contains(kinds, kind);
    int rc = WIRE_OK;
    if (known < 0)
        rc = WIRE_ERR;
    else if (!known)
        rc = refuse(seq, "kind", kind);
    else if (PyUnicode_GET_LENGTH(id) == 0 || PyUnicode_GET_LENGTH(id) > 64)
        rc = refuse(seq, "id", NULL);
    else if ((int64_t)last[3].v <= 0)
        rc = refuse(seq, "time", NULL);
    for (int i = 0; i < 7 && rc == WIRE_OK; i++)
        if (last[TEXTS[i]].len && memchr(last[TEXTS[i]].data, 0, last[TEXTS[i]].len))
            rc = refuse(seq, "nul", NULL);
    b->n = 0;
    if (rc == WIRE_OK && attributes && last[14].len)
        rc = put_struct(b, last[14].data, last[14].data + last[14].len, 1);
    if (rc == WIRE_OK) {
        PyObject *text = b->n > 2 ? PyUnicode_DecodeUTF8(b->s, (Py_ssize_t)b->n, NULL) : Py_NewRef(EMPTY);
        if (text != NULL && shape->cls) {
            Py_SETREF(text, PyObject_CallOneArg(shape->wrap, text));
        }
        if (text == NULL)
            rc = WIRE_ERR;
        else
            PyTuple_SET_ITEM(t, at + 13, text);
    }
    if (rc != WIRE_OK) {
        Py_DECREF(t);
        return rc;
    }
    if (shape->cls) {
        for (Py_ssize_t i = 0; i < at; i++)
            PyTuple_SET_ITEM(t, i, Py_NewRef(PyTuple_GET_ITEM(shape->head, i)));
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(shape->tail); i++)
            PyTuple_SET_ITEM(t, at + 14 + i, Py_NewRef(PyTuple_GET_ITEM(shape->tail, i)));
    }
    *out = t;
    return WIRE_OK;
}

static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer raw;
    PyObject *kinds, *cls = Py_None;
    Shape shape = {NULL, NULL, NULL, NULL};
    if (!PyArg_ParseTuple(args, "y*O|OO!O!O", &raw, &kinds, &cls, &PyTuple_Type, &shape.head, &PyTuple_Type,
                          &shape.tail, &shape.wrap))
        return NULL;
    if (cls != Py_None) {
        if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type) || shape.wrap == NULL) {
            PyBuffer_Release(&raw);
            PyErr_SetString(PyExc_TypeError, "cls must be a tuple subclass, given with head, tail and wrap");
            return NULL;
        }
        shape.cls = (PyTypeObject *)cls;
    }
    PyObject *events = PyList_New(0);
    Buf b = {NULL, 0, 0};
    const uint8_t *p = (const uint8_t *)raw.buf, *end = p + raw.len;
    int rc = events == NULL ? WIRE_ERR : WIRE_OK;
    Field f;
    while (p < end && rc == WIRE_OK) {
        if ((rc = next(&p, end, &f)))
            break;
        if (f.field != 4)
            continue;
        if (f.wt != 2) {
            rc = WIRE_FALLBACK;
            break;
        }
        PyObject *t = NULL;
        if ((rc = event(f.data, f.data + f.len, kinds, &shape, &b, &t)))
            break;
        rc = PyList_Append(events, t) ? WIRE_ERR : WIRE_OK;
        Py_DECREF(t);
    }
    PyMem_Free(b.s);
    PyBuffer_Release(&raw);
    if (rc == WIRE_OK)
        return events;
    Py_XDECREF(events);
    if (rc == WIRE_FALLBACK)
        Py_RETURN_NONE;
    if (rc == WIRE_BAD)
        PyErr_SetString(PyExc_ValueError, "malformed EventBatch bytes");
    return NULL;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(raw, kinds[, cls, head, tail, wrap]) -> [(scalars in FIELDS order..., attributes text)], or\n"
     "[cls(*head, *scalars, wrap(text), *tail)]; None to take the Python path"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_wire", NULL, -1, methods};

PyMODINIT_FUNC PyInit__wire(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Refused = PyErr_NewExceptionWithDoc("collector.ingest._wire.Refused",
                                        "An event the ingest checks refuse: args (seq, reason, kind).", NULL, NULL);
    EMPTY = PyUnicode_InternFromString("{}");
    PyObject *names = PyTuple_New(13);
    if (Refused == NULL || names == NULL || EMPTY == NULL)
        goto fail;
    for (int i = 0; i < 13; i++) {
        PyObject *s = PyUnicode_FromString(NAMES[i]);
        if (s == NULL)
            goto fail;
        PyTuple_SET_ITEM(names, i, s);
    }
    int failed = PyModule_AddObjectRef(m, "Refused", Refused) || PyModule_AddObjectRef(m, "FIELDS", names) ||
                 PyModule_AddIntConstant(m, "MAX_DEPTH", MAX_DEPTH);
    Py_DECREF(names);
    if (failed) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
fail:
    Py_XDECREF(names);
    Py_DECREF(m);
    return NULL;
}
