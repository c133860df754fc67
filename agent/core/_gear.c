/* The cut rule of agent.core.fingerprint.Chunker at C speed (the module docstring there states it
 * and what it guarantees; this file must stay byte for byte the same rule, which
 * tests/agent/test_fingerprint.py checks against the pure-Python loop).
 *
 * scan(data, gear, h, threshold, pos, start, last, chunk_min, chunk_max)
 *   -> (cuts, h, start, last)
 * Consumes ``data`` (any contiguous buffer) as the bytes at stream offset ``pos``; ``gear`` is the
 * 256-entry table as 2048 native-endian bytes. ``cuts`` lists each cut as (end << 1) | natural.
 * The GIL is released while scanning, so fingerprinting never holds up the agent's other threads.
 * Sans-I/O: bytes in, numbers out; it never keeps the bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer data, gear;
    unsigned long long h_in, threshold;
    long long pos, start, last, chunk_min, chunk_max;
    if (!PyArg_ParseTuple(args, "y*y*KKLLLLL", &data, &gear, &h_in, &threshold, &pos, &start, &last,
                          &chunk_min, &chunk_max))
        return NULL;
    if (gear.len != 256 * 8 || chunk_min < 1 || chunk_max < 1) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&gear);
        PyErr_SetString(PyExc_ValueError, "gear must be 2048 bytes; chunk sizes positive");
        return NULL;
    }
    uint64_t table[256];
    memcpy(table, gear.buf, sizeof table);
    PyBuffer_Release(&gear);

    const unsigned char *p = (const unsigned char *)data.buf;
    Py_ssize_t n = data.len;
    uint64_t h = (uint64_t)h_in;
    size_t cap = 64, count = 0;
    long long *cuts = (long long *)malloc(cap * sizeof *cuts);
    int oom = cuts == NULL;

    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t i = 1;
    while (i <= n && !oom) {
        /* Fast path, four bytes at a time: the hash after each of them is computed from the
         * hash before the four, so the dependency chain is one shift and add per four bytes.
         * Taken only when none of the four is a candidate and no forced cut can fall inside;
         * otherwise the byte-at-a-time loop below decides, exactly as the rule says. */
        if (i + 3 <= n && pos + i + 3 - start < chunk_max) {
            uint64_t t0 = table[p[i - 1]], t1 = table[p[i]], t2 = table[p[i + 1]], t3 = table[p[i + 2]];
            uint64_t h1 = (h << 1) + t0;
            uint64_t h2 = (h << 2) + (t0 << 1) + t1;
            uint64_t h3 = (h << 3) + (t0 << 2) + (t1 << 1) + t2;
            uint64_t h4 = (h << 4) + (t0 << 3) + (t1 << 2) + (t2 << 1) + t3;
            if (((h1 < threshold) | (h2 < threshold) | (h3 < threshold) | (h4 < threshold)) == 0) {
                h = h4;
                i += 4;
                continue;
            }
        }
        Py_ssize_t stop = i + 4 <= n ? i + 4 : n + 1;
        for (; i < stop && !oom; i++) {
            h = (h << 1) + table[p[i - 1]];
            long long end = pos + i;
            int cut = 0, natural = 0;
            if (h < threshold) {
                natural = end - last >= chunk_min;
                last = end;
                cut = natural || end - start == chunk_max;
            } else if (end - start == chunk_max) {
                cut = 1;
            }
            if (cut) {
                if (count == cap) {
                    long long *grown = (long long *)realloc(cuts, 2 * cap * sizeof *cuts);
                    if (grown == NULL) {
                        oom = 1;
                        break;
                    }
                    cuts = grown;
                    cap *= 2;
                }
                cuts[count++] = (end << 1) | natural;
                start = end;
            }
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (oom) {
        free(cuts);
        return PyErr_NoMemory();
    }
    PyObject *list = PyList_New((Py_ssize_t)count);
    if (list == NULL) {
        free(cuts);
        return NULL;
    }
    for (size_t k = 0; k < count; k++) {
        PyObject *item = PyLong_FromLongLong(cuts[k]);
        if (item == NULL) {
            free(cuts);
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)k, item);
    }
    free(cuts);
    return Py_BuildValue("(NKLL)", list, (unsigned long long)h, start, last);
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Finds the chunk cuts in the next bytes of a stream."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_gear", NULL, -1, methods};

PyMODINIT_FUNC PyInit__gear(void) { return PyModule_Create(&module); }
