/* Held program starts answered without Python: agent.sources.fanotify's exec holder in C.
 *
 * ExecHolder(fd) takes a fanotify group whose marks ask for FAN_OPEN_EXEC_PERM (the caller made
 * it; from start() on this module owns it and closes it when its thread ends). A thread of its
 * own, which never takes the GIL, reads the group; for each held exec it notes what the new
 * process is (pid, start time from /proc/PID/stat, real uid from /proc/PID/status, the program
 * from the event's descriptor) in a bounded ring, then allows the exec. Python drains the notes
 * (drain()) before it reads the records of those processes, and applies the same rules to them as
 * the Python holder it replaces. So a program start waits for a few /proc reads, never for the
 * interpreter, however busy the agent's Python threads are or how low their priority: this thread
 * runs at normal priority (nice 0) even when the agent's Python threads are niced.
 *
 * Every held event is answered FAN_ALLOW, whatever happens; a full ring loses notes (counted in
 * `lost`), never an answer. If the thread ends for any reason, it closes the group first: the
 * kernel then allows whatever would have been held. The agent's own pid is answered unnoted.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fanotify.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define RING 4096          /* notes between two drains; Python is woken at a quarter of it */
#define PROGRAM_MAX 256    /* longer program paths are noted as unknown (the process is looked up) */

typedef struct {
    int pid;
    int uid;
    long long start;
    char program[PROGRAM_MAX];
} note_t;

typedef struct {
    PyObject_HEAD
    int fd;
    int wake_r, wake_w;     /* stop() -> thread */
    int notify_r, notify_w; /* thread -> Python: the ring is filling up */
    int self_pid;
    int started, joined;
    pthread_t thread;
    pthread_mutex_t lock;
    note_t *ring;
    unsigned long long head, tail;
    unsigned long long held, lost, noted;
} Holder;

static long long start_time(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0) return -1;
    ssize_t n = read(f, buf, sizeof buf - 1);
    close(f);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (p == NULL) return -1;
    p += 2; /* the fields after the last ")" are plain: state is field 3, starttime field 22 */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL) return -1;
        p++;
    }
    char *end;
    long long value = strtoll(p, &end, 10);
    return end == p ? -1 : value;
}

static int real_uid(int pid) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0) return -1;
    ssize_t n = read(f, buf, sizeof buf - 1);
    close(f);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strstr(buf, "\nUid:");
    if (p == NULL) return -1;
    char *end;
    long value = strtol(p + 5, &end, 10);
    return end == p + 5 ? -1 : (int)value;
}

static void note(Holder *h, int pid, int fd) {
    char link[64];
    note_t n;
    n.pid = pid;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, n.program, PROGRAM_MAX - 1);
    if (len <= 0 || len >= PROGRAM_MAX - 1) return; /* unknown program: looked up later instead */
    n.program[len] = 0;
    n.uid = real_uid(pid);
    n.start = start_time(pid);
    if (n.uid < 0 || n.start < 0) return;
    int wake = 0;
    pthread_mutex_lock(&h->lock);
    if (h->head - h->tail >= RING) {
        h->lost++;
    } else {
        h->ring[h->head % RING] = n;
        h->head++;
        h->noted++;
        wake = (h->head - h->tail) == RING / 4;
    }
    pthread_mutex_unlock(&h->lock);
    if (wake) {
        char byte = 1;
        (void)!write(h->notify_w, &byte, 1);
    }
}

static void *run(void *arg) {
    Holder *h = (Holder *)arg;
    /* Every exec on the machine waits for this thread: never below normal priority, even when the
     * agent's Python threads run niced (raising it back needs CAP_SYS_NICE, which root has). */
    pid_t tid = (pid_t)syscall(SYS_gettid);
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, (id_t)tid);
    if (errno == 0 && nice > 0) (void)setpriority(PRIO_PROCESS, (id_t)tid, 0);
    /* struct fanotify_event_metadata is 8-byte aligned */
    uint64_t aligned[4096 / sizeof(uint64_t)];
    char *buf = (char *)aligned;
    struct pollfd fds[2] = {{h->fd, POLLIN, 0}, {h->wake_r, POLLIN, 0}};
    for (;;) {
        int r = poll(fds, 2, -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (fds[1].revents) break;
        if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) break;
        if (!(fds[0].revents & POLLIN)) continue;
        for (;;) {
            ssize_t n = read(h->fd, buf, sizeof aligned);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break; /* EAGAIN: drained */
            struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
            while (FAN_EVENT_OK(m, n)) {
                if (m->fd >= 0) {
                    if (m->mask & (FAN_OPEN_EXEC_PERM | FAN_OPEN_PERM)) {
                        if (m->pid != h->self_pid && m->vers == FANOTIFY_METADATA_VERSION) note(h, m->pid, m->fd);
                        struct fanotify_response answer = {m->fd, FAN_ALLOW};
                        (void)!write(h->fd, &answer, sizeof answer);
                        __atomic_add_fetch(&h->held, 1, __ATOMIC_RELAXED);
                    }
                    close(m->fd);
                }
                m = FAN_EVENT_NEXT(m, n);
            }
        }
    }
    close(h->fd); /* whatever ended the loop: nothing may stay held */
    h->fd = -1;
    return NULL;
}

static int Holder_init(Holder *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", NULL};
    int fd;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", kwlist, &fd)) return -1;
    int wake[2], notify[2];
    if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (pipe2(notify, O_CLOEXEC | O_NONBLOCK) < 0) {
        close(wake[0]);
        close(wake[1]);
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->ring = calloc(RING, sizeof(note_t));
    if (self->ring == NULL) {
        close(wake[0]); close(wake[1]); close(notify[0]); close(notify[1]);
        PyErr_NoMemory();
        return -1;
    }
    self->fd = fd;
    self->wake_r = wake[0];
    self->wake_w = wake[1];
    self->notify_r = notify[0];
    self->notify_w = notify[1];
    self->self_pid = getpid();
    pthread_mutex_init(&self->lock, NULL);
    return 0;
}

static PyObject *Holder_start(Holder *self, PyObject *noargs) {
    if (self->started) {
        PyErr_SetString(PyExc_RuntimeError, "ExecHolder already started");
        return NULL;
    }
    int err = pthread_create(&self->thread, NULL, run, self);
    if (err != 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->started = 1;
    Py_RETURN_NONE;
}

static void stop(Holder *self) {
    if (self->started && !self->joined) {
        char byte = 1;
        (void)!write(self->wake_w, &byte, 1);
        pthread_join(self->thread, NULL);
        self->joined = 1;
    }
}

static PyObject *Holder_stop(Holder *self, PyObject *noargs) {
    Py_BEGIN_ALLOW_THREADS
    stop(self);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Holder_drain(Holder *self, PyObject *noargs) {
    char byte[64];
    while (read(self->notify_r, byte, sizeof byte) > 0) {
    }
    pthread_mutex_lock(&self->lock);
    unsigned long long count = self->head - self->tail;
    note_t *copy = count ? malloc(count * sizeof(note_t)) : NULL;
    if (count && copy == NULL) {
        pthread_mutex_unlock(&self->lock);
        return PyErr_NoMemory();
    }
    for (unsigned long long i = 0; i < count; i++) copy[i] = self->ring[(self->tail + i) % RING];
    self->tail = self->head;
    pthread_mutex_unlock(&self->lock);
    PyObject *out = PyList_New((Py_ssize_t)count);
    for (unsigned long long i = 0; out != NULL && i < count; i++) {
        PyObject *item = Py_BuildValue("(iiLy)", copy[i].pid, copy[i].uid, copy[i].start, copy[i].program);
        if (item == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, item);
    }
    free(copy);
    return out;
}

static PyObject *Holder_get_held(Holder *self, void *closure) {
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->held, __ATOMIC_RELAXED));
}

static PyObject *Holder_get_lost(Holder *self, void *closure) {
    pthread_mutex_lock(&self->lock);
    unsigned long long lost = self->lost;
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromUnsignedLongLong(lost);
}

static PyObject *Holder_get_running(Holder *self, void *closure) {
    return PyBool_FromLong(self->started && !self->joined && self->fd >= 0);
}

static PyObject *Holder_get_notify_fd(Holder *self, void *closure) {
    return PyLong_FromLong(self->notify_r);
}

static void Holder_dealloc(Holder *self) {
    stop(self);
    if (self->ring != NULL) { /* initialised; the group itself is the caller's until start() */
        close(self->wake_r);
        close(self->wake_w);
        close(self->notify_r);
        close(self->notify_w);
        pthread_mutex_destroy(&self->lock);
        free(self->ring);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Holder_methods[] = {
    {"start", (PyCFunction)Holder_start, METH_NOARGS, "Starts the thread that answers held execs."},
    {"stop", (PyCFunction)Holder_stop, METH_NOARGS, "Stops the thread; it closes the group."},
    {"drain", (PyCFunction)Holder_drain, METH_NOARGS,
     "The notes taken since the last drain: [(pid, uid, start_time, program bytes)], oldest first."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Holder_getset[] = {
    {"held", (getter)Holder_get_held, NULL, "held events answered", NULL},
    {"lost", (getter)Holder_get_lost, NULL, "notes lost to a full ring", NULL},
    {"running", (getter)Holder_get_running, NULL, "whether the thread answers", NULL},
    {"notify_fd", (getter)Holder_get_notify_fd, NULL, "readable when notes wait to be drained", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject HolderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent.sources._execheld.ExecHolder",
    .tp_basicsize = sizeof(Holder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Answers a fanotify group's held execs on a thread without the GIL, noting each process.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Holder_init,
    .tp_dealloc = (destructor)Holder_dealloc,
    .tp_methods = Holder_methods,
    .tp_getset = Holder_getset,
};


/* read_records(fd, roots, ignore, size): one read of a notification group's records (never a
 * permission group: nothing here answers), and for each record what the Python reader did per
 * record: the path of its descriptor (readlink of /proc/self/fd/N), the descriptor closed, the
 * agent's own pids and paths under none of the roots left out. The read and the per-record system
 * calls run without the GIL. Returns None when nothing is waiting (EAGAIN), else
 * (records, overflows, dropped, time_ns, bad_version) with records = [(mask, pid, path str)],
 * path decoded as os.fsdecode does. */
typedef struct { unsigned long long mask; int pid; size_t off, len; } rec_t;

static int under_root(const char *path, size_t len, PyObject *roots) {
    Py_ssize_t n = PyTuple_GET_SIZE(roots);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyTuple_GET_ITEM(roots, i);
        const char *root = PyBytes_AS_STRING(r);
        size_t rlen = (size_t)PyBytes_GET_SIZE(r);
        if (rlen == 1 && root[0] == '/') return 1;
        if (len >= rlen && memcmp(path, root, rlen) == 0 && (len == rlen || path[rlen] == '/')) return 1;
    }
    return 0;
}

static PyObject *read_records(PyObject *module, PyObject *args) {
    int fd;
    PyObject *roots, *ignore;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "iO!O!n", &fd, &PyTuple_Type, &roots, &PyTuple_Type, &ignore, &size)) return NULL;
    Py_ssize_t n_roots = PyTuple_GET_SIZE(roots), n_ignore = PyTuple_GET_SIZE(ignore);
    for (Py_ssize_t i = 0; i < n_roots; i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(roots, i))) return PyErr_Format(PyExc_TypeError, "roots must be bytes");
    int ignored[64];
    if (n_ignore > 64) return PyErr_Format(PyExc_ValueError, "at most 64 pids to ignore");
    for (Py_ssize_t i = 0; i < n_ignore; i++) {
        ignored[i] = (int)PyLong_AsLong(PyTuple_GET_ITEM(ignore, i));
        if (ignored[i] == -1 && PyErr_Occurred()) return NULL;
    }
    if (size < (Py_ssize_t)sizeof(struct fanotify_event_metadata)) size = 4096;
    char *buf = malloc((size_t)size);
    size_t cap = 64 * 1024, used = 0;
    char *paths = malloc(cap);
    rec_t *recs = malloc(((size_t)size / sizeof(struct fanotify_event_metadata) + 1) * sizeof(rec_t));
    if (buf == NULL || paths == NULL || recs == NULL) {
        free(buf); free(paths); free(recs);
        return PyErr_NoMemory();
    }
    size_t n = 0;
    long overflows = 0, dropped = 0;
    int bad = 0, err = 0, oom = 0;
    ssize_t got;
    struct timespec now;
    Py_BEGIN_ALLOW_THREADS
    do {
        got = read(fd, buf, (size_t)size);
    } while (got < 0 && errno == EINTR);
    err = got < 0 ? errno : 0;
    clock_gettime(CLOCK_REALTIME, &now);
    char *p = buf;
    ssize_t left = got > 0 ? got : 0;
    while (left >= (ssize_t)sizeof(struct fanotify_event_metadata)) {
        struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)p;
        if (m->vers != FANOTIFY_METADATA_VERSION || m->event_len < sizeof *m) {
            bad = 1; /* the caller stops: the rest of the buffer cannot be parsed */
            break;
        }
        p += m->event_len;
        left -= (ssize_t)m->event_len;
        if (m->mask & FAN_Q_OVERFLOW) {
            overflows++;
            continue;
        }
        if (m->fd < 0) {
            dropped++;
            continue;
        }
        int skip = 0;
        for (Py_ssize_t i = 0; i < n_ignore; i++) if (ignored[i] == m->pid) skip = 1;
        if (skip) {
            close(m->fd);
            continue;
        }
        if (cap - used < PATH_MAX) {
            char *grown = oom ? NULL : realloc(paths, cap * 2);
            if (grown == NULL) {
                oom = 1;
                close(m->fd);
                dropped++;
                continue;
            }
            paths = grown;
            cap *= 2;
        }
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", m->fd);
        ssize_t len = readlink(link, paths + used, PATH_MAX - 1);
        close(m->fd);
        if (len <= 0) {
            dropped++;
            continue;
        }
        recs[n].mask = m->mask;
        recs[n].pid = m->pid;
        recs[n].off = used;
        recs[n].len = (size_t)len;
        n++;
        used += (size_t)len;
    }
    Py_END_ALLOW_THREADS
    free(buf);
    PyObject *out = NULL, *list = NULL;
    if (got < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
        free(paths); free(recs);
        Py_RETURN_NONE;
    }
    if (got < 0) {
        free(paths); free(recs);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    list = PyList_New(0);
    if (list == NULL) goto done;
    for (size_t i = 0; i < n; i++) {
        const char *path = paths + recs[i].off;
        if (!under_root(path, recs[i].len, roots)) continue;
        PyObject *text = PyUnicode_DecodeFSDefaultAndSize(path, (Py_ssize_t)recs[i].len);
        if (text == NULL) goto done;
        PyObject *item = Py_BuildValue("(KiN)", recs[i].mask, recs[i].pid, text);
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            goto done;
        }
        Py_DECREF(item);
    }
    out = Py_BuildValue("(OllLi)", list, overflows, dropped,
                        (long long)now.tv_sec * 1000000000LL + now.tv_nsec, bad);
done:
    Py_XDECREF(list);
    free(paths); free(recs);
    return out;
}

static PyMethodDef module_methods[] = {
    {"read_records", read_records, METH_VARARGS,
     "read_records(fd, roots, ignore, size) -> None or ([(mask, pid, path)], overflows, dropped, time_ns, bad)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_execheld", "Held program starts answered, and records read, without the GIL.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__execheld(void) {
    if (PyType_Ready(&HolderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&HolderType);
    if (PyModule_AddObject(m, "ExecHolder", (PyObject *)&HolderType) < 0) {
        Py_DECREF(&HolderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
