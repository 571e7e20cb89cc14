/*
 * The native interop client: runs a host program from inside a distribution without starting an
 * interpreter (pywsl.guest.interop_client does the same in Python, and everything this one does
 * not: wslpath, a caller on a terminal, PYWSL_INTEROP_CLIENT=python; it execs LAUNCH_PYTHON
 * INVOKED [ARGUMENT...] for those).
 *
 * Command line: INVOKED [ARGUMENT...] when it is the launcher itself (built static: the instance's
 * mount point and root filesystem folder come from CONTEXT_FILE, INVOKED is the path execve got,
 * AT_EXECFN, as a script's $0), or, from a launcher script,
 * --context MOUNT_POINT ROOTFS INVOKED [ARGUMENT...]. Then:
 *   INVOKED = <path folder>/<escaped host folder>/<name>: run <host folder>/<name>;
 *   INVOKED = the launcher: launch HOSTPATH [ARGUMENT...].
 *
 * It only connects to $WSL_INTEROP, sends LX_INIT_CREATE_NT_PROCESS_UTILITY_VM (the bytes
 * interop_messages.encode_create_process builds for interop_paths.forwarded_environment) with
 * descriptors 0, 1 and 2, forwards the signals it gets as PYWSL_SIGNAL_PROCESS, and exits with
 * the host program's exit status. The working folder and the environment travel as they are
 * inside; the host's worker translates them (interop_paths.translate_request).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define PATH_FOLDER "/run/WSL/interop/path"
#define LAUNCH_PYTHON "/run/WSL/interop/launch-python"
#define CONTEXT_FILE "/run/WSL/interop/context"
#define DEFAULT_SOCKET "/run/WSL/1_interop"
#define CONNECT_TIMEOUT_S 10
#define CREATE_PROCESS_UTILITY_VM 8
#define EXIT_STATUS 9
#define CREATE_PROCESS_RESPONSE 11
#define SIGNAL_PROCESS 204
#define HEADER_SIZE 16
#define COMMON 24
#define BUFFER_START (COMMON + 49)
#define SIZEOF_CREATE 80
#define MAX_FRAME 4096
#define MAX_STRINGS_BYTES (1024 * 1024)
#define MAX_REQUEST_BYTES (MAX_STRINGS_BYTES + 4096)
#define MOUNT_POINT_ENTRY "PYWSL_INTEROP_MOUNT_POINT="
#define ROOTFS_ENTRY "PYWSL_INTEROP_ROOTFS="

extern char **environ;

static const int forwarded_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGUSR1, SIGUSR2};
#define FORWARDED_COUNT (sizeof forwarded_signals / sizeof forwarded_signals[0])

static void report(const char *format, const char *a, const char *b)
{
    char text[8192];
    int length = snprintf(text, sizeof text, format, a, b);
    if (length < 0)
        return;
    if ((size_t)length >= sizeof text)
        length = sizeof text - 1;
    ssize_t ignored = write(2, text, (size_t)length);
    (void)ignored;
}

/* A growing byte buffer; a failed allocation ends the client (exit 1). */
struct buffer {
    char *data;
    size_t length, capacity;
};

static void append(struct buffer *buffer, const void *bytes, size_t size)
{
    if (buffer->length + size > buffer->capacity) {
        size_t capacity = buffer->capacity ? buffer->capacity : 4096;
        while (capacity < buffer->length + size)
            capacity *= 2;
        char *data = realloc(buffer->data, capacity);
        if (data == NULL) {
            report("pywsl: %s%s\n", "out of memory", "");
            exit(1);
        }
        buffer->data = data;
        buffer->capacity = capacity;
    }
    memcpy(buffer->data + buffer->length, bytes, size);
    buffer->length += size;
}

static void append_string(struct buffer *buffer, const char *text)
{
    append(buffer, text, strlen(text) + 1);
}

static void append_entry(struct buffer *buffer, const char *name, const char *value)
{
    append(buffer, name, strlen(name));
    append(buffer, "=", 1);
    append_string(buffer, value);
}

static void put32(char *at, uint32_t value)
{
    for (int i = 0; i < 4; i++)
        at[i] = (char)(value >> (8 * i));
}

static void put16(char *at, uint16_t value)
{
    at[0] = (char)value;
    at[1] = (char)(value >> 8);
}

static uint32_t get32(const unsigned char *at)
{
    return at[0] | (uint32_t)at[1] << 8 | (uint32_t)at[2] << 16 | (uint32_t)at[3] << 24;
}

/* Is NAME (LENGTH bytes) among the first COUNT names of WSLENV already sent? */
static int seen_before(const char *wslenv, const char *name, size_t length, int count)
{
    const char *item = wslenv;
    for (int index = 0; index < count; item = strchr(item, ':') + 1, index++) {
        size_t item_length = strcspn(item, ":/");
        if (item_length == length && memcmp(item, name, length) == 0)
            return 1;
    }
    return 0;
}

static int reserved(const char *name, size_t length)
{
    static const char *const names[] = {"PATH", "TERM", "WSLENV", "PYWSL_INTEROP_MOUNT_POINT",
                                        "PYWSL_INTEROP_ROOTFS"};
    for (size_t index = 0; index < sizeof names / sizeof names[0]; index++)
        if (strlen(names[index]) == length && memcmp(names[index], name, length) == 0)
            return 1;
    return 0;
}

static const char *lookup(const char *name, size_t length)
{
    for (char **entry = environ; *entry != NULL; entry++)
        if (strncmp(*entry, name, length) == 0 && (*entry)[length] == '=')
            return *entry + length + 1;
    return NULL;
}

/* The environment entries interop_paths.forwarded_environment lists, in its order. */
static void append_environment(struct buffer *buffer, const char *mount_point, const char *rootfs)
{
    static const char *const plain[] = {"PATH", "TERM", "WSLENV"};
    append_entry(buffer, "PYWSL_INTEROP_MOUNT_POINT", mount_point);
    append_entry(buffer, "PYWSL_INTEROP_ROOTFS", rootfs);
    for (size_t index = 0; index < 3; index++) {
        const char *value = getenv(plain[index]);
        if (value != NULL)
            append_entry(buffer, plain[index], value);
    }
    const char *wslenv = getenv("WSLENV");
    if (wslenv == NULL)
        return;
    int count = 0;
    for (const char *item = wslenv;; item += strcspn(item, ":") + 1, count++) {
        size_t length = strcspn(item, ":/");
        if (length > 0 && memchr(item, '=', length) == NULL && !reserved(item, length) &&
            !seen_before(wslenv, item, length, count)) {
            const char *value = lookup(item, length);
            if (value != NULL) {
                append(buffer, item, length);
                append(buffer, "=", 1);
                append_string(buffer, value);
            }
        }
        if (item[strcspn(item, ":")] == '\0')
            break;
    }
}

/* LX_INIT_CREATE_NT_PROCESS_UTILITY_VM, as interop_messages.encode_create_process builds it. */
static void build_request(struct buffer *message, const char *filename, const char *cwd, int count,
                          char **arguments, const char *mount_point, const char *rootfs)
{
    struct buffer strings = {0};
    uint32_t filename_offset = 49;
    append_string(&strings, filename);
    uint32_t cwd_offset = 49 + (uint32_t)strings.length;
    append_string(&strings, cwd);
    uint32_t environment_offset = 49 + (uint32_t)strings.length;
    append_environment(&strings, mount_point, rootfs);
    append(&strings, "\0\0", 2);
    uint32_t command_line_offset = 49 + (uint32_t)strings.length;
    for (int index = 0; index < count; index++)
        append_string(&strings, arguments[index]);
    size_t size = BUFFER_START + strings.length;
    if (size < SIZEOF_CREATE)
        size = SIZEOF_CREATE;
    char fixed[BUFFER_START] = {0};
    put32(fixed, CREATE_PROCESS_UTILITY_VM);
    put32(fixed + 4, (uint32_t)size);
    char *common = fixed + COMMON + 24;
    put32(common, filename_offset);
    put32(common + 4, cwd_offset);
    put32(common + 8, command_line_offset);
    put16(common + 12, (uint16_t)count);
    put32(common + 16, environment_offset);
    append(message, fixed, sizeof fixed);
    append(message, strings.data, strings.length);
    while (message->length < size)
        append(message, "", 1);
    free(strings.data);
}

static int connect_to(const char *path)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        report("pywsl: cannot reach the interop server at %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct timeval timeout = {.tv_sec = CONNECT_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (strlen(path) >= sizeof address.sun_path) {
        errno = ENAMETOOLONG;
    } else {
        memcpy(address.sun_path, path, strlen(path) + 1);
        if (connect(fd, (struct sockaddr *)&address, sizeof address) == 0)
            return fd;
    }
    report("pywsl: cannot reach the interop server at %s: %s\n", path, strerror(errno));
    close(fd);
    return -1;
}

/* The request with descriptors 0, 1 and 2; 0 on failure (reported). A server that refuses
 * (interop disabled) answers without reading the request: EPIPE and ECONNRESET are not errors. */
static int send_request(int fd, const struct buffer *request)
{
    int stdio[3] = {0, 1, 2};
    char control[CMSG_SPACE(sizeof stdio)] = {0};
    struct iovec vector = {.iov_base = request->data, .iov_len = request->length};
    struct msghdr header = {
        .msg_iov = &vector, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    struct cmsghdr *rights = CMSG_FIRSTHDR(&header);
    rights->cmsg_level = SOL_SOCKET;
    rights->cmsg_type = SCM_RIGHTS;
    rights->cmsg_len = CMSG_LEN(sizeof stdio);
    memcpy(CMSG_DATA(rights), stdio, sizeof stdio);
    ssize_t sent = sendmsg(fd, &header, MSG_NOSIGNAL);
    size_t done = sent > 0 ? (size_t)sent : 0;
    while (sent >= 0 && done < request->length) {
        sent = send(fd, request->data + done, request->length - done, MSG_NOSIGNAL);
        done += sent > 0 ? (size_t)sent : 0;
    }
    if (sent < 0 && errno != EPIPE && errno != ECONNRESET) {
        report("pywsl: cannot send the request to the interop server: %s%s\n", strerror(errno), "");
        return 0;
    }
    return 1;
}

/* Exactly SIZE bytes; 0 when the connection ended first. */
static int receive_exact(int fd, unsigned char *data, size_t size)
{
    size_t done = 0;
    while (done < size) {
        ssize_t got = recv(fd, data + done, size - done, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return 0;
        done += (size_t)got;
    }
    return 1;
}

/* One frame into FRAME (MAX_FRAME bytes); its type, or -1 for an end or an invalid frame. */
static long receive_frame(int fd, unsigned char *frame)
{
    if (!receive_exact(fd, frame, HEADER_SIZE))
        return -1;
    uint32_t size = get32(frame + 4);
    if (size < HEADER_SIZE || size > MAX_FRAME)
        return -1;
    if (!receive_exact(fd, frame + HEADER_SIZE, size - HEADER_SIZE))
        return -1;
    return size >= HEADER_SIZE + 4 ? (long)get32(frame) : -1;
}

static void forward_signal(int fd, int number)
{
    char message[HEADER_SIZE + 4] = {0};
    put32(message, SIGNAL_PROCESS);
    put32(message + 4, sizeof message);
    put32(message + HEADER_SIZE, (uint32_t)number);
    ssize_t ignored = send(fd, message, sizeof message, MSG_NOSIGNAL);
    (void)ignored;
}

/* Signals the caller gets while the program runs go to it (as the Python client does). */
static int trap_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    for (size_t index = 0; index < FORWARDED_COUNT; index++)
        sigaddset(&set, forwarded_signals[index]);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

static int exit_code_for(int error)
{
    return error == ENOENT || error == ENOTDIR ? 127 : 126;
}

/* The response and then the exit status, forwarding signals meanwhile: the client's exit code. */
static int follow(int fd, const char *filename, int signals)
{
    static unsigned char frame[MAX_FRAME];
    int started = 0;
    for (;;) {
        struct pollfd waits[2] = {{.fd = fd, .events = POLLIN}, {.fd = signals, .events = POLLIN}};
        if (poll(waits, signals >= 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        struct signalfd_siginfo info;
        while (signals >= 0 && waits[1].revents && read(signals, &info, sizeof info) == sizeof info)
            forward_signal(fd, (int)info.ssi_signo);
        if (!waits[0].revents)
            continue;
        long type = receive_frame(fd, frame);
        int32_t value = (int32_t)get32(frame + HEADER_SIZE);
        if (type == CREATE_PROCESS_RESPONSE && !started) {
            if (value == EPERM) {
                report("pywsl: %s%s\n",
                       "interop with the host is disabled in this distribution ([interop] enabled=false)", "");
                return 1;
            }
            if (value != 0) {
                report("pywsl: cannot run %s on the host: %s\n", filename, strerror(value));
                return exit_code_for(value);
            }
            started = 1;
            continue;
        }
        if (type == EXIT_STATUS && started)
            return value;
        break;
    }
    report("pywsl: %s%s\n", "the interop server closed the connection", "");
    return 1;
}

/* "%2F" -> "/", "%25" -> "%" (interop_client.unescape_folder), in place. */
static void unescape_folder(char *name)
{
    char *out = name;
    for (char *in = name; *in != '\0'; out++) {
        if (strncmp(in, "%2F", 3) == 0) {
            *out = '/';
            in += 3;
        } else if (strncmp(in, "%25", 3) == 0) {
            *out = '%';
            in += 3;
        } else {
            *out = *in++;
        }
    }
    *out = '\0';
}

/* The host program $0 stands for (allocated), or NULL when $0 is the launcher itself. */
static char *host_program(const char *invoked)
{
    const char *slash = strrchr(invoked, '/');
    size_t prefix = strlen(PATH_FOLDER "/");
    if (slash == NULL || strncmp(invoked, PATH_FOLDER "/", prefix) != 0 || slash < invoked + prefix)
        return NULL;
    size_t folder_length = (size_t)(slash - invoked) - prefix;
    char *program = malloc(folder_length + strlen(slash) + 1);
    if (program == NULL)
        return NULL;
    memcpy(program, invoked + prefix, folder_length);
    program[folder_length] = '\0';
    unescape_folder(program);
    strcat(program, slash);
    return program;
}

static int run_host_program(const char *filename, int count, char **arguments, const char *mount_point,
                            const char *rootfs)
{
    char cwd[8192];
    if (getcwd(cwd, sizeof cwd) == NULL)
        strcpy(cwd, "/");
    struct buffer request = {0};
    build_request(&request, filename, cwd, count, arguments, mount_point, rootfs);
    if (request.length > MAX_REQUEST_BYTES || count > 0xFFFF) { /* the count is 16 bits */
        char bound[64];
        snprintf(bound, sizeof bound, "%d", MAX_STRINGS_BYTES);
        report("pywsl: cannot run %s on the host: Argument list too long (at most %s bytes of "
               "arguments and environment)\n",
               filename, bound);
        return 126;
    }
    /* Blocked before connecting: a signal that comes early stays pending and is forwarded. */
    int signals = trap_signals();
    const char *path = getenv("WSL_INTEROP");
    int fd = connect_to(path != NULL && *path != '\0' ? path : DEFAULT_SOCKET);
    if (fd < 0)
        return 1;
    struct timeval none = {0};
    if (!send_request(fd, &request))
        return 1;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    free(request.data);
    return follow(fd, filename, signals);
}

/* The Python client's cases: wslpath, a caller with a terminal, or the caller's choice. */
static int needs_python(const char *invoked)
{
    const char *slash = strrchr(invoked, '/');
    const char *choice = getenv("PYWSL_INTEROP_CLIENT");
    return strcmp(slash != NULL ? slash + 1 : invoked, "wslpath") == 0 || isatty(0) || isatty(1) ||
           isatty(2) || (choice != NULL && strcmp(choice, "python") == 0);
}

static int run_python(int count, char **invoked)
{
    char **argv = calloc((size_t)count + 2, sizeof *argv);
    if (argv == NULL)
        return 1;
    argv[0] = LAUNCH_PYTHON;
    memcpy(argv + 1, invoked, (size_t)count * sizeof *argv);
    execv(LAUNCH_PYTHON, argv);
    report("pywsl: cannot start %s: %s\n", LAUNCH_PYTHON, strerror(errno));
    return 126;
}

/* MOUNT_POINT NUL ROOTFS NUL from CONTEXT_FILE (written by init); 0 when it cannot be read. */
static int read_context(char *buffer, size_t size, const char **mount_point, const char **rootfs)
{
    int fd = open(CONTEXT_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t length = read(fd, buffer, size - 1);
    close(fd);
    if (length <= 0)
        return 0;
    buffer[length] = '\0';
    size_t first = strlen(buffer);
    if ((ssize_t)first + 1 >= length)
        return 0;
    *mount_point = buffer;
    *rootfs = buffer + first + 1;
    return 1;
}

int main(int argc, char **argv)
{
    static char context[16384];
    const char *mount_point, *rootfs;
    int count = argc;
    char **invoked = argv;
    if (argc >= 2 && strcmp(argv[1], "--context") == 0) {
        if (argc < 5) {
            report("pywsl: %s%s\n", "usage: launch HOSTPATH [ARGUMENT...]", "");
            return 1;
        }
        mount_point = argv[2];
        rootfs = argv[3];
        count = argc - 4;
        invoked = argv + 4;
    } else if (argc < 1 || !read_context(context, sizeof context, &mount_point, &rootfs)) {
        report("pywsl: cannot read %s: %s\n", CONTEXT_FILE, strerror(errno));
        return 1;
    } else {
        /* The path the caller's shell ran (as a script gets it in $0): argv[0] is often the
         * name alone, without the PATH folder that says which host folder it stands for. */
        char *executed = (char *)getauxval(AT_EXECFN);
        if (executed != NULL)
            argv[0] = executed;
    }
    if (needs_python(invoked[0]))
        return run_python(count, invoked);
    char *program = host_program(invoked[0]);
    if (program != NULL)
        return run_host_program(program, count - 1, invoked + 1, mount_point, rootfs);
    if (count < 2 || invoked[1][0] != '/') {
        report("pywsl: %s%s\n", "usage: launch HOSTPATH [ARGUMENT...] (HOSTPATH: an absolute path of the host)",
               "");
        return 1;
    }
    return run_host_program(invoked[1], count - 2, invoked + 2, mount_point, rootfs);
}
